"""A poisoned blob store, against a real `sortie up` with authentication: what a client or an
agent with its own credentials tries is refused or quarantined, later runs are unaffected, and
a blob damaged in the store (only the scheduler's credentials can do that) gives a clear error
at download and a `snapshot` failure at the agent, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import nats.errors
import pytest

from sortie.bus.blobs import blob_entry, meta_for, put_blob, sha256_bytes, staging_nuid
from sortie.bus.connection import Bus, BusAuth, open_bus
from sortie.client.snapshot import build_manifest, encode_manifest
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from tests.e2e.conftest import Installation

EMPTY = sha256_bytes(b"")
SCRIPT = (
    "from pathlib import Path\n"
    "assert Path('empty.txt').read_bytes() == b'', 'empty.txt is not empty'\n"
    "assert Path('data.txt').read_text() == 'the data\\n'\n"
    "Path('outputs').mkdir(exist_ok=True)\n"
    "Path('outputs/result.txt').write_text('the result\\n')\n"
    "print('trained', flush=True)\n"
)


async def _bus(installation: Installation, creds: Path, name: str) -> Bus:
    return await open_bus(installation.url, name, auth=BusAuth(creds=creds))


async def _plant(bus: Bus, sha: str, data: bytes) -> m.BlobCommitReply:
    """Stage ``data`` under ``sha`` and ask for it to be committed: an uploader's only way in."""
    nuid = staging_nuid(sha, "planted")
    await bus.js.publish(bus.blobs.chunk_subject(nuid), data)
    commit = m.BlobCommit(sha256=sha, nuid=nuid, size=len(data), chunks=1)
    msg = await bus.nc.request(subjects.BLOB_COMMIT, codec.encode(commit), timeout=10)
    reply: m.BlobCommitReply = codec.decode(m.BlobCommitReply, msg.data)
    return reply


async def _overwrite_fails(bus: Bus, sha: str, *, stored: bool = True) -> None:
    """A nats client's put (and, for a stored blob, delete) of ``sha`` is refused."""
    store = await bus.nc.jetstream(timeout=1.0).object_store(subjects.OBJ_BLOBS)
    with pytest.raises(nats.errors.TimeoutError):
        await store.put(sha, b"garbage")
    if stored:
        with pytest.raises(nats.errors.TimeoutError):
            await store.delete(sha)


async def _damage(installation: Installation, sha: str, garbage: bytes) -> None:
    """Damage a stored blob as only full rights on the broker can: a verified-looking entry
    whose chunks are other bytes (a disk fault, or the scheduler's credentials stolen)."""
    bus = await _bus(installation, installation.scheduler_creds, "damage")
    try:
        nuid = staging_nuid(sha, "damaged")
        await bus.js.publish(bus.blobs.chunk_subject(nuid), garbage)
        commit = m.BlobCommit(sha256=sha, nuid=nuid, size=len(garbage), chunks=1)
        await bus.js.publish(bus.blobs.meta_subject(sha), meta_for(commit, "2026-01-01T00:00:00Z"))
    finally:
        await bus.close()


async def _record(installation: Installation, run_id: object) -> m.RunRecord:
    bus = await _bus(installation, installation.client_creds, "reader")
    try:
        entry = await bus.runs.get(str(run_id))
    finally:
        await bus.close()
    return codec.decode(m.RunRecord, entry.value or b"")


def _submit(installation: Installation, src: Path) -> dict[str, object]:
    proc = installation.cli(
        "run", "submit", str(src), "--script", "train.py", "--wait", "--output", "json"
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    run_id = lines[0]["run_id"]
    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict)
    assert (proc.returncode == 0) == (shown["state"] == "Completed"), proc.stderr
    return shown


async def test_planted_and_overwritten_blobs_do_not_poison_later_runs(
    installation: Installation, tmp_path: Path
) -> None:
    client = await _bus(installation, installation.client_creds, "attacker")
    agent = await _bus(installation, installation.data_dir / "agent" / "agent.creds", "agent")
    try:
        # before any honest upload: garbage under sha256(b"") is refused and quarantined
        reply = await _plant(client, EMPTY, b"garbage, not empty")
        assert isinstance(reply, m.ErrorReply) and reply.code == "blob_corrupt"
        await _overwrite_fails(client, EMPTY, stored=False)
        await _overwrite_fails(agent, EMPTY, stored=False)
        assert await blob_entry(client.blobs, EMPTY) is None

        src = tmp_path / "src"
        src.mkdir()
        (src / "empty.txt").write_bytes(b"")
        (src / "data.txt").write_text("the data\n")
        (src / "train.py").write_text(SCRIPT)
        first = _submit(installation, src)
        assert first["state"] == "Completed", first

        # the run's artifact and manifest cannot be overwritten or deleted, by either
        rec = await _record(installation, first["run_id"])
        [artifact] = rec.artifacts
        for bus in (client, agent):
            await _overwrite_fails(bus, artifact.sha256)
            await _overwrite_fails(bus, rec.spec.snapshot_id)
        reply = await _plant(agent, artifact.sha256, b"the agent's own result\n")
        assert isinstance(reply, m.BlobCommitted) and not reply.new

        second = _submit(installation, src)
        assert second["state"] == "Completed", second
        logs = installation.cli("run", "logs", str(second["run_id"]), check=True).stdout
        assert "1 files, 0 uploaded, 1 already stored" in logs
        dest = tmp_path / "dl"
        installation.cli("run", "download", str(second["run_id"]), str(dest), "--flat", check=True)
        assert (dest / "outputs" / "result.txt").read_text() == "the result\n"
        operator = await _bus(installation, installation.scheduler_creds, "operator")
        try:
            kv = await operator.js.key_value(subjects.KV_QUARANTINE)
            quarantined = (await kv.get(EMPTY)).value
        finally:
            await operator.close()
        assert quarantined is not None
        assert codec.decode(m.QuarantinedBlob, quarantined).by == "client"
    finally:
        await client.close()
        await agent.close()


async def test_a_damaged_artifact_and_a_damaged_snapshot_file_say_what_is_wrong(
    installation: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty.txt").write_bytes(b"")
    (src / "data.txt").write_text("the data\n")
    (src / "train.py").write_text(SCRIPT.replace("the result", "another result"))
    run = _submit(installation, src)
    [artifact] = (await _record(installation, run["run_id"])).artifacts
    await _damage(installation, artifact.sha256, b"damaged result\n")

    proc = installation.cli("run", "download", str(run["run_id"]), str(tmp_path / "dl"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"artifact outputs/result.txt of run {run['run_id']} cannot be downloaded" in proc.stderr
    assert f"blob {artifact.sha256} is corrupt in the object store" in proc.stderr
    assert "again to produce it anew" in proc.stderr
    assert not (tmp_path / "dl" / str(run["run_id"]) / "outputs" / "result.txt").exists()

    # a snapshot file damaged after it was stored: the agent refuses it, the run says why
    data = b"data the agent has never cached\n"
    client = await _bus(installation, installation.client_creds, "client")
    try:
        await put_blob(client.blobs, sha256_bytes(data), data)
    finally:
        await client.close()
    # same size: the scheduler's look at the manifest (sizes) passes; only the bytes differ
    await _damage(installation, sha256_bytes(data), b"X" * len(data))
    (src / "data.txt").write_bytes(data)
    failed = _submit(installation, src)
    assert failed["state"] == "Failed", failed
    error = failed["error"]
    assert isinstance(error, dict) and error["kind"] == "snapshot", error
    assert f"blob {sha256_bytes(data)} is corrupt in the object store" in str(error["message"])
    assert "submit again" in str(error["message"])


async def test_a_manifest_stored_without_its_files_does_not_block_the_tree(
    installation: Installation, tmp_path: Path
) -> None:
    """Someone who knows a tree stores its manifest alone (an uploader may store any blob
    that is what its name says): the client, told by the scheduler that a file is missing,
    sends every file and the run goes through."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty.txt").write_bytes(b"")
    (src / "data.txt").write_text("the data\n")
    (src / "train.py").write_text(SCRIPT + "print('ahead of the attacker')\n")
    snapshot_id, manifest = encode_manifest(build_manifest(src).manifest)
    attacker = await _bus(installation, installation.client_creds, "attacker")
    try:
        assert (await put_blob(attacker.blobs, snapshot_id, manifest)).new
    finally:
        await attacker.close()
    run = _submit(installation, src)
    assert run["state"] == "Completed", run
    assert isinstance(run["snapshot"], dict) and run["snapshot"]["id"] == snapshot_id
