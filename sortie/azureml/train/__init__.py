"""``azureml.train``: v1's training namespace (``hyperdrive``: hyperparameter sweeps)."""
