"""The lines a waiting client prints about why a queued run has no agent."""

from __future__ import annotations

import msgspec

from sortie.client.wait_notes import WaitNotes
from sortie.proto import messages as m
from sortie.proto.states import RunState
from tests import builders as b


def test_a_line_when_waiting_starts_when_the_reason_changes_and_when_placed() -> None:
    notes = WaitNotes()
    rec = b.record("r1", spec=b.spec(target="box"))
    assert notes.seen(rec, 0.0) is None  # queued, nothing said yet
    failed = m.TargetWait(reason="attach failed: unreachable: refused", since=100.0)
    rec = msgspec.structs.replace(rec, waiting=failed)
    line = notes.seen(rec, 130.0)
    assert line is not None
    assert line.startswith("[r1] queued: target box has no agent: attach failed: unreachable")
    assert line.endswith("30 s ago)")
    assert notes.seen(rec, 200.0) is None  # the same reason: said once
    again = m.TargetWait(reason="the machine is being attached", since=210.0)
    assert "being attached" in (notes.seen(msgspec.structs.replace(rec, waiting=again), 211) or "")
    placed = msgspec.structs.replace(rec, state=RunState.PREPARING, waiting=None, agent_id="box")
    assert notes.seen(placed, 220.0) == "[r1] Preparing on box"
    assert notes.seen(placed, 221.0) is None
