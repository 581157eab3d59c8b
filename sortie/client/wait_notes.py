"""The lines a waiting client prints about a queued run's target (``RunRecord.waiting``): one
when the run starts waiting for an agent, one each time the reason changes, one when an agent
took it. Pure: records and ``now`` in, lines out."""

from __future__ import annotations

from dataclasses import dataclass

from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.proto.waiting import describe


@dataclass
class WaitNotes:
    """Follows one run's records; ``seen`` returns the line to print, or None."""

    reason: str | None = None

    def seen(self, rec: m.RunRecord, now: float) -> str | None:
        wait = rec.waiting if rec.state is RunState.QUEUED else None
        reason = None if wait is None else wait.reason
        if reason == self.reason:
            return None
        before, self.reason = self.reason, reason
        if wait is not None:
            return f"[{rec.run_id}] queued: {describe(rec.spec.target, wait, now)}"
        if before is not None and rec.state is not RunState.QUEUED:
            return f"[{rec.run_id}] {rec.state} on {rec.agent_id or rec.spec.target}"
        return None
