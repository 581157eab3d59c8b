"""Whose logs and metrics a reader believes: only those of the agent that held the attempt.

Each agent publishes a run's output under its own id (``subjects.logs(run_id, agent_id)``;
its credentials allow no other), and the run record lists who held each attempt's ranks
(``RunRecord.writers``). A batch whose writer did not hold that attempt and rank is a forgery
(another agent writing into a run it does not run) and is never shown.

Output stored by Sortie 0.1 sits on the subject without a writer; it is shown only for records
stored then (no ``writers``), which no agent of this version can add to.
"""

from __future__ import annotations

from sortie.proto import messages as m
from sortie.proto import subjects


def believed(rec: m.RunRecord, writer: str | None, attempt: int, rank: int | None) -> bool:
    """Is a batch for ``attempt`` (and ``rank``; ``None``: any) published by ``writer`` (the
    subject's writer token, ``None`` for the 0.1 form) part of the run's history?"""
    if writer is None:
        return not rec.writers
    if writer == subjects.SCHEDULER_WRITER:
        return True
    return any(
        w.agent_id == writer and w.attempt == attempt and (rank is None or w.rank == rank)
        for w in rec.writers
    )
