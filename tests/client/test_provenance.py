"""Whose logs and metrics a reader believes: the rule by table, then the client's reader against
a real nats-server (a 0.1 stream's output still reads; a non-holder's never does)."""

from __future__ import annotations

import time

import pytest

from sortie.bus.connection import Bus
from sortie.bus.resources import ensure_resources
from sortie.client.client import Client
from sortie.client.provenance import believed
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from tests.builders import record as run_record

WRITERS = [
    m.Writer(attempt=1, rank=0, agent_id="a1"),
    m.Writer(attempt=1, rank=1, agent_id="a2"),
    m.Writer(attempt=2, rank=0, agent_id="a3"),
]


@pytest.mark.parametrize(
    ("writers", "writer", "attempt", "rank", "expected"),
    [
        (WRITERS, "a1", 1, 0, True),  # the holder of attempt 1, rank 0
        (WRITERS, "a2", 1, 1, True),  # another rank's holder
        (WRITERS, "a2", 1, 0, False),  # claims a rank it did not hold
        (WRITERS, "a1", 2, 0, False),  # claims an attempt it did not hold
        (WRITERS, "a3", 2, None, True),  # metrics carry no rank
        (WRITERS, "intruder", 1, 0, False),  # never held the run
        (WRITERS, subjects.SCHEDULER_WRITER, 2, 0, True),  # the end-of-log marker
        (WRITERS, None, 1, 0, False),  # the 0.1 subject, for a record of this version
        ([], None, 1, 0, True),  # the 0.1 subject, for a record stored by 0.1
        ([], "a1", 1, 0, False),
    ],
)
def test_believed(
    writers: list[m.Writer], writer: str | None, attempt: int, rank: int | None, expected: bool
) -> None:
    rec = run_record("r1", writers=writers)
    assert believed(rec, writer, attempt, rank) is expected


def line(text: str) -> list[m.LogLine]:
    return [m.LogLine(t=time.time(), stream="stdout", text=text)]


async def test_the_reader_shows_holders_and_0_1_output_only(bus: Bus) -> None:
    await ensure_resources(bus.js)
    old = run_record("old1")  # stored by 0.1: no writers, output on the 0.1 subject
    new = run_record("new1", writers=[m.Writer(attempt=1, rank=0, agent_id="a1")])
    for rec in (old, new):
        await bus.runs.put(rec.run_id, codec.encode(rec))
    publish = bus.js.publish
    await publish(subjects.legacy_logs("old1"), codec.encode(m.LogBatch(
        run_id="old1", attempt=1, lines=line("old line"))))  # fmt: skip
    for subject, text in (
        (subjects.logs("new1", "a1"), "holder line"),
        (subjects.logs("new1", "a2"), "forged line"),
        (subjects.legacy_logs("new1"), "forged 0.1 line"),
    ):
        await publish(subject, codec.encode(m.LogBatch(run_id="new1", attempt=1, lines=line(text))))
    for subject, value in (
        (subjects.metrics("new1", "a1"), 1.0),
        (subjects.metrics("new1", "a2"), 9.0),
    ):
        point = m.MetricPoint(name="loss", value=value, t=time.time())
        await publish(
            subject, codec.encode(m.MetricBatch(run_id="new1", attempt=1, points=[point]))
        )
    client = Client(bus)
    assert [ln.text async for _, ln in client.logs("old1")] == ["old line"]
    assert [ln.text async for _, ln in client.logs("new1")] == ["holder line"]
    assert await client.metrics("new1") == {"loss": [1.0]}
