"""Node providers: where a cluster's nodes come from.

``base`` is the protocol and names no provider; ``process`` and ``ssh`` are one provider
each; ``registry`` maps each cluster variant to its provider.
"""
