"""Per-run bounds with a real agent and a real broker: a run past its log, metric and artifact
limits keeps running and completes; its log says what was cut and keeps the tail."""

from __future__ import annotations

from pathlib import Path

from agent_builders import Reports, agent, spec, stream_batches, upload_snapshot

from sortie.agents.limits import RunLimits
from sortie.bus.blobs import has_blob
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState

CHATTY = b"""\
import os
from sortie import Run
run = Run.get_context()
for i in range(5000):
    print(f"line {i:05d} " + "x" * 40)
for i in range(300):
    run.log("loss", float(i))
os.makedirs("outputs", exist_ok=True)
for name, size in (("a.bin", 300_000), ("b.bin", 500_000), ("c.bin", 100_000)):
    with open(os.path.join("outputs", name), "wb") as fh:
        fh.write(os.urandom(size))
print("done")
"""


async def _lines(bus: Bus, run_id: str) -> list[tuple[str, str]]:
    batches = [
        codec.decode(m.LogBatch, d) for d in await stream_batches(bus.js, subjects.run_logs(run_id))
    ]
    return [(ln.stream, ln.text) for b in batches for ln in b.lines]


async def test_a_run_past_its_limits_completes_with_notices_and_its_tail(
    bus: Bus, tmp_path: Path
) -> None:
    limits = RunLimits(log_bytes=20_000, tail_lines=50, metric_points=100, artifact_bytes=450_000)
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.py": (CHATTY, 0o644)})
    async with agent(bus, tmp_path, limits=limits) as sched:
        inc = await sched.incarnation()
        await sched.send(m.Assign(run_id="chatty", attempt=1, incarnation=inc, spec=spec(snap)))
        got = await reports.until_terminal("chatty", timeout=60)
    assert got[-1].state == RunState.COMPLETED and got[-1].exit_code == 0

    lines = await _lines(bus, "chatty")
    stdout = [t for s, t in lines if s == "stdout"]
    system = [t for s, t in lines if s == "system"]
    # published up to the limit (392 lines of 51 characters fit 20 kB), then the kept tail:
    # the last 50 lines, the last being "done"
    text = [f"line {i:05d} " + "x" * 40 for i in range(5000)] + ["done"]
    assert stdout == text[:392] + text[-50:]
    assert "log limit 20 kB reached; further lines dropped, the last 50 lines are kept" in system
    assert any(
        t.endswith("were dropped past the log limit; the last 50 lines follow") for t in system
    )

    # metrics: 100 points, then the last point of "loss" at the end
    points = [
        p
        for d in await stream_batches(bus.js, subjects.run_metrics("chatty"))
        for p in codec.decode(m.MetricBatch, d).points
    ]
    assert [p.value for p in points] == [float(i) for i in range(100)] + [299.0]
    assert any(t.startswith("metric limit 100 points reached") for t in system)

    # artifacts: a.bin (300 kB) fits, b.bin (500 kB) does not, c.bin (100 kB) still does
    assert sorted(a.path for a in got[-1].artifacts) == ["outputs/a.bin", "outputs/c.bin"]
    for a in got[-1].artifacts:
        assert await has_blob(bus.blobs, a.sha256)
    assert "artifact limit 450 kB reached: 1 files (500 kB) not uploaded: outputs/b.bin" in system
    assert "uploading outputs: 400 kB" in system
    await reports.close()
