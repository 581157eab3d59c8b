"""Checks on a submitted pipeline: what is wrong with it, said so a person can fix it."""

from __future__ import annotations

from sortie.proto.pipelines import PipelineRequest


def problem(request: PipelineRequest) -> str | None:
    """What is wrong (no steps, more than MAX_STEPS, a bad or repeated step name, a cycle
    (naming its steps), an input nobody produces, two producers of one output, a run_after
    naming no step, a data token for data the step neither reads nor writes, a parameter
    token or a value for a parameter the pipeline does not declare, ...), or None."""
    raise NotImplementedError
