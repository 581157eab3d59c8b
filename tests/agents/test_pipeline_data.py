"""A pipeline step's data on a real agent against a real broker (the test acts as a minimal
scheduler): a step writes its output directory, the agent stores it content-addressed and
reports the manifest id; a later step reads it laid out from that id; links leaving the
directory are never stored; bad data fails the run saying why."""

from __future__ import annotations

import os
from pathlib import Path

from agent_builders import Reports, agent, stream_batches, upload_snapshot

from sortie.bus.blobs import encode_manifest, get_blob, has_blob, sha256_bytes
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.pipelines import data_token
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState

WRITE = b"""\
import os, sys
out = sys.argv[2]
print("writing to", out, "absolute" if os.path.isabs(out) else "relative")
with open(os.path.join(out, "a.txt"), "w") as fh:
    fh.write("alpha\\n")
os.makedirs(os.path.join(out, "sub"))
with open(os.path.join(out, "sub", "b.bin"), "wb") as fh:
    fh.write(bytes(range(256)))
os.symlink(sys.argv[3], os.path.join(out, "leak"))  # leaves the dir: never stored
os.symlink("a.txt", os.path.join(out, "same"))  # inside: stored as a.txt's content
if len(sys.argv) > 4:
    os.mkfifo(os.path.join(out, "pipe"))  # not a regular file: the output cannot be stored
"""
READ = b"""\
import os, sys
src = sys.argv[1]
a = open(os.path.join(src, "a.txt")).read()
b = open(os.path.join(src, "sub", "b.bin"), "rb").read()
assert a == "alpha\\n", a
assert b == bytes(range(256)), b[:10]
assert sorted(os.listdir(src)) == ["a.txt", "same", "sub"], os.listdir(src)
print("read", a.strip(), len(b), "from", src)
"""
NOTHING = b"print('wrote nothing')\n"
SECRET = b"an agent-only secret, never stored\n"


def step(snapshot_id: str, script: str, **kw: object) -> m.RunSpec:
    return m.RunSpec(experiment="exp", script=script, snapshot_id=snapshot_id, **kw)


async def _log(bus: Bus, run_id: str) -> list[tuple[str, str]]:
    batches = [
        codec.decode(m.LogBatch, d) for d in await stream_batches(bus.js, subjects.run_logs(run_id))
    ]
    return [(ln.stream, ln.text) for b in batches for ln in b.lines]


async def test_a_step_writes_its_output_data_and_a_later_step_reads_it(
    bus: Bus, tmp_path: Path
) -> None:
    reports = Reports(bus.js)
    await reports.open()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    snap = await upload_snapshot(
        bus,
        {"write.py": (WRITE, 0o644), "read.py": (READ, 0o644), "nothing.py": (NOTHING, 0o644)},
    )
    async with agent(bus, tmp_path) as sched:
        inc = await sched.incarnation()
        writer = step(
            snap,
            "write.py",
            arguments=["--out", data_token("d"), str(secret)],
            data_outputs=["d"],
        )
        await sched.send(m.Assign(run_id="prep", attempt=1, incarnation=inc, spec=writer))
        got = await reports.until_terminal("prep")
        assert [r.state for r in got][-2:] == [RunState.FINALIZING, RunState.COMPLETED], got[-1]
        assert [r.data_outputs for r in got[:-1]] == [{}] * (len(got) - 1)
        data_id = got[-1].data_outputs["d"]
        manifest = codec.decode(m.Manifest, await get_blob(bus.blobs, data_id))
        alpha, bytes256 = sha256_bytes(b"alpha\n"), sha256_bytes(bytes(range(256)))
        assert [(f.path, f.size, f.sha256) for f in manifest.files] == [
            ("a.txt", 6, alpha),
            ("same", 6, alpha),
            ("sub/b.bin", 256, bytes256),
        ]
        assert await has_blob(bus.blobs, alpha) and await has_blob(bus.blobs, bytes256)
        assert not await has_blob(bus.blobs, sha256_bytes(SECRET))
        lines = await _log(bus, "prep")
        written_to = next(t for s, t in lines if s == "stdout" and t.startswith("writing to"))
        assert written_to.endswith("/prep/1.data/out/d absolute"), written_to
        assert any("not storing d/leak (a link leaving d/)" in t for _, t in lines), lines

        # the next step reads it where its argument says; its blobs are fetched once
        reader = step(snap, "read.py", arguments=[data_token("d")], data_inputs={"d": data_id})
        for run_id in ("train", "train2"):
            await sched.send(m.Assign(run_id=run_id, attempt=1, incarnation=inc, spec=reader))
            got = await reports.until_terminal(run_id)
            assert got[-1].state == RunState.COMPLETED, got[-1].error
            assert got[-1].data_outputs == {}
        first, second = await _log(bus, "train"), await _log(bus, "train2")
        assert any(
            t.startswith("read alpha 256 from ") and t.endswith("/1.data/in/d") for _, t in first
        )
        assert any(f"data d {data_id[:12]}: 3 files, 2 fetched" in t for _, t in first), first
        assert any(f"data d {data_id[:12]}: 3 files, 0 fetched" in t for _, t in second), second

        # an empty output directory is an empty manifest
        empty = step(snap, "nothing.py", data_outputs=["e"])
        await sched.send(m.Assign(run_id="empty", attempt=1, incarnation=inc, spec=empty))
        got = await reports.until_terminal("empty")
        empty_id, _ = encode_manifest(m.Manifest(files=[]))
        assert got[-1].state == RunState.COMPLETED and got[-1].data_outputs == {"e": empty_id}
        assert await has_blob(bus.blobs, empty_id)
    await reports.close()


async def test_bad_data_fails_the_run_saying_why(bus: Bus, tmp_path: Path) -> None:
    reports = Reports(bus.js)
    await reports.open()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    snap = await upload_snapshot(bus, {"write.py": (WRITE, 0o644), "read.py": (READ, 0o644)})
    async with agent(bus, tmp_path) as sched:
        inc = await sched.incarnation()
        cases = {
            # a file the agent cannot store as the run's own regular file
            "fifo": step(
                snap,
                "write.py",
                arguments=["--out", data_token("d"), str(secret), "fifo"],
                data_outputs=["d"],
            ),
            # a token naming data the step neither reads nor writes
            "undeclared": step(snap, "read.py", arguments=[data_token("x")]),
            # a name that is no PipelineData name (it would leave the data dir)
            "badname": step(snap, "read.py", data_outputs=["../up"]),
            # an input whose manifest the store does not have
            "missing": step(snap, "read.py", data_inputs={"d": "ab" * 32}),
        }
        for run_id, run_spec in cases.items():
            await sched.send(m.Assign(run_id=run_id, attempt=1, incarnation=inc, spec=run_spec))
        ended = {run_id: (await reports.until_terminal(run_id))[-1] for run_id in cases}
    await reports.close()
    assert {r: (e.state, e.error.kind if e.error else None) for r, e in ended.items()} == {
        "fifo": (RunState.FAILED, ErrorKind.INTERNAL),
        "undeclared": (RunState.FAILED, ErrorKind.START),
        "badname": (RunState.FAILED, ErrorKind.START),
        "missing": (RunState.FAILED, ErrorKind.SNAPSHOT),
    }
    messages = {r: e.error.message for r, e in ended.items() if e.error is not None}
    assert "output data 'd' cannot be stored: d/pipe (" in messages["fifo"]
    assert "not a regular file" in messages["fifo"]
    assert ended["fifo"].exit_code == 0 and ended["fifo"].data_outputs == {}
    assert "name data 'x', which the step neither reads" in messages["undeclared"]
    assert "'../up'" in messages["badname"] and "not PipelineData names" in messages["badname"]
    assert f"cannot fetch the manifest of data d {'ab' * 32}" in messages["missing"]
    assert not os.path.exists(tmp_path / "agent" / "runs" / "badname" / "1.data" / "up")


async def test_an_agent_stores_the_data_an_unreported_attempt_left(
    bus: Bus, tmp_path: Path
) -> None:
    """The script ended 0, its agent died before reporting (agents.orphans): the next agent on
    the data dir stores the output data it finds and reports it with Completed."""
    reports = Reports(bus.js)
    await reports.open()
    run_dir = tmp_path / "agent" / "runs" / "left"
    (run_dir / "1.data" / "out" / "d").mkdir(parents=True)
    (run_dir / "1.data" / "out" / "d" / "x.txt").write_text("x")
    (run_dir / "1.exit").write_text("0\n")
    async with agent(bus, tmp_path):
        got = await reports.until_terminal("left")
    await reports.close()
    assert [r.state for r in got] == [RunState.RUNNING, RunState.FINALIZING, RunState.COMPLETED]
    assert [r.data_outputs for r in got[:2]] == [{}, {}]
    manifest = codec.decode(m.Manifest, await get_blob(bus.blobs, got[-1].data_outputs["d"]))
    assert [(f.path, f.sha256) for f in manifest.files] == [("x.txt", sha256_bytes(b"x"))]
