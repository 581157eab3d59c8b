"""Submitting a stored run again: the same snapshot and configuration, a new run.

Pure: the record in, the spec to submit (or why not) out. ``Client.resubmit`` sends it; the
snapshot is already in the store, so nothing is uploaded.
"""

from __future__ import annotations

import msgspec

from sortie.proto import messages as m

RUN_BASED = "amlcompute"  # the target that asks for a temporary cluster per run
RUN_BASED_PREFIX = "run-"  # how the scheduler names that cluster (scheduler/targets.py)


def submitted_target(spec: m.RunSpec) -> str:
    """The target as the user gave it: a run-based creation's stored spec names the
    temporary cluster made for it (gone once the run ended); it was submitted to
    ``amlcompute``."""
    if spec.amlcompute is not None and spec.target.startswith(RUN_BASED_PREFIX):
        return RUN_BASED
    return spec.target


def resubmit_refusal(rec: m.RunRecord) -> str | None:
    """Why ``rec`` cannot be submitted again from its record alone, or None."""
    if rec.parent_id is not None:
        return (
            f"run {rec.run_id} is a child run, started by its parent's script: resubmit its "
            f"parent {rec.parent_id} instead"
        )
    if rec.spec.secret_env_names:
        names = ", ".join(rec.spec.secret_env_names)
        return (
            f"run {rec.run_id} has secret variables ({names}) whose values are kept nowhere "
            "readable: resubmit it from the CLI with the values in your environment "
            "(`sortie run submit ... --secret-env NAME`; the run page's CLI command has them)"
        )
    return None


def resubmit_spec(rec: m.RunRecord, submission_id: str) -> m.RunSpec:
    """``rec``'s spec as a new submission: same snapshot, environment, resources, arguments,
    experiment and submit-time tags; its own submission id."""
    return msgspec.structs.replace(
        rec.spec, submission_id=submission_id, target=submitted_target(rec.spec)
    )
