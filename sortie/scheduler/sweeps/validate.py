"""Checks on a submitted ``SweepSpec``: what is wrong with it, said so a person can fix it."""

from __future__ import annotations

from sortie.proto.sweeps import SweepSpec


def problem(spec: SweepSpec) -> str | None:
    """What is wrong with the sweep (an empty space, a bad bound, a sampler that cannot take
    an expression, a policy Bayesian sampling cannot use, limits below 1, ...), or None."""
    raise NotImplementedError
