"""Input a process cannot take, manifests that lie, files that vanish mid-submit: each gets a
clear error and changes nothing, against a real `sortie up`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sortie.bus.blobs import put_blob, sha256_bytes
from sortie.bus.connection import Bus, BusAuth, open_bus
from sortie.client.client import Client
from sortie.client.runconfig import ScriptRunConfig
from sortie.client.snapshot import SnapshotError
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from tests.e2e.conftest import Installation


def _run_ids(installation: Installation) -> set[str]:
    runs = installation.json("run", "list")
    assert isinstance(runs, list)
    return {r["run_id"] for r in runs}


@pytest.fixture
def profile(installation: Installation, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process talks to the installation through its profile, as the CLI does."""
    monkeypatch.setenv("SORTIE_PROFILE", installation.env["SORTIE_PROFILE"])
    for name in ("SORTIE_URL", "SORTIE_CREDS"):
        monkeypatch.delenv(name, raising=False)


def test_cli_refuses_a_nul_in_an_argument(installation: Installation, tmp_path: Path) -> None:
    # No exec can carry a NUL in argv, so a child Python calls the CLI's own entry point with
    # one (as a wrapper or a notebook would). A child, not this process: `main` configures
    # logging and the event loop policy for the whole process it runs in.
    (tmp_path / "s.py").write_text("import sys; print(sys.argv)\n")
    before = _run_ids(installation)
    call = (
        "import sys; from sortie.cli.main import main; "
        f"sys.exit(main(['run', 'submit', {str(tmp_path)!r}, '--script', 's.py', "
        "'--arg', 'a' + chr(0) + 'b']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", call],
        env=installation.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "script argument 1 ('a\\x00b') contains a NUL byte" in err and "remove it" in err
    assert "Traceback" not in err
    assert _run_ids(installation) == before


async def _bus(installation: Installation) -> Bus:
    return await open_bus(installation.url, "raw", auth=BusAuth(creds=installation.client_creds))


async def _snapshot(bus: Bus, files: dict[str, tuple[bytes, int]]) -> str:
    """Upload blobs and a manifest whose sizes are the given ones (true or not)."""
    entries = []
    for path, (data, size) in files.items():
        sha = sha256_bytes(data)
        await put_blob(bus.blobs, sha, data)
        entries.append(m.FileEntry(path=path, size=size, mode=0o644, sha256=sha))
    manifest = codec.encode(m.Manifest(files=entries))
    snap = sha256_bytes(manifest)
    await put_blob(bus.blobs, snap, manifest)
    return snap


async def test_raw_bus_submit_with_a_nul_is_refused(installation: Installation) -> None:
    bus = await _bus(installation)
    try:
        script = b"import sys; print(sys.argv)\n"
        snap = await _snapshot(bus, {"s.py": (script, len(script))})
        before = _run_ids(installation)
        for spec, expected in [
            ({"arguments": ["a\x00b"]}, "script argument 1 ('a\\x00b') contains a NUL byte"),
            ({"env_vars": {"A": "x\x00"}}, "environment variable A contains a NUL byte"),
            (
                {"environment": {"python": {"user_managed": False, "pip": ["six", "x\x00y"]}}},
                "pip package 2 ('x\\x00y') contains a NUL byte",
            ),
            (
                {"environment": {"python": {"interpreter": "/usr/bin/python3\x00"}}},
                "the Python interpreter ('/usr/bin/python3\\x00') contains a NUL byte",
            ),
            (
                {"environment": {"docker": {"enabled": True, "base_image": "busybox\x00"}}},
                "the container image ('busybox\\x00') contains a NUL byte",
            ),
        ]:
            request = {
                "type": "submit",
                "spec": {"experiment": "nul", "script": "s.py", "snapshot_id": snap, **spec},
            }
            reply = await bus.nc.request(subjects.API_SUBMIT, json.dumps(request).encode(), 10)
            body = json.loads(reply.data)
            assert body["type"] == "error" and body["code"] == "bad_request", body
            assert expected in body["message"]
        assert _run_ids(installation) == before
    finally:
        await bus.close()


async def test_sdk_refuses_a_nul_in_a_secret_before_hashing(
    installation: Installation, tmp_path: Path, profile: None
) -> None:
    (tmp_path / "s.py").write_text("print(1)\n")
    config = ScriptRunConfig(source_directory=tmp_path, script="s.py")
    config.run_config.secret_environment_variables = {"TOKEN": "hun\x00ter2"}
    hashed: list[int] = []
    client = await Client.connect()
    try:
        with pytest.raises(ValueError, match="secret environment variable TOKEN") as err:
            await client.submit(config, hash_progress=lambda done, _: hashed.append(done))
    finally:
        await client.close()
    assert "hun" not in str(err.value)
    assert hashed == []  # refused before a byte was read


async def test_a_file_deleted_between_hash_and_upload_is_named(
    installation: Installation, tmp_path: Path, profile: None
) -> None:
    (tmp_path / "s.py").write_text("print(1)\n")
    doomed = tmp_path / "data" / "doomed.txt"
    doomed.parent.mkdir()
    doomed.write_text(uuid.uuid4().hex)  # content the store cannot already hold

    def delete_once_hashed(done: int, total: int) -> None:
        if total and done == total:  # every file hashed; the upload comes next
            doomed.unlink()

    before = _run_ids(installation)
    client = await Client.connect()
    try:
        with pytest.raises(SnapshotError) as err:
            await client.submit(
                ScriptRunConfig(source_directory=tmp_path, script="s.py"),
                hash_progress=delete_once_hashed,
            )
    finally:
        await client.close()
    assert str(err.value).startswith("data/doomed.txt was deleted (or moved) after it was hashed")
    assert "submit again" in str(err.value)
    assert _run_ids(installation) == before


async def test_a_manifest_that_lies_about_sizes_is_refused_at_submit(
    installation: Installation,
) -> None:
    """The scheduler checks the total against its limit (10 GiB unless SORTIE_SNAPSHOT_LIMIT_MB
    says otherwise) and, for a small tree, each entry against its blob."""
    bus = await _bus(installation)
    before = _run_ids(installation)
    script = b"print('ran')\n"
    try:
        for files, expected in [
            (
                {"s.py": (script, len(script)), "big.bin": (b"x", 10**12)},
                "the snapshot holds 1,000,000,000,013 bytes, more than this scheduler's limit "
                "of 10,737,418,240",
            ),
            (
                {"s.py": (script, len(script)), "small.bin": (b"y", 5)},
                "the manifest says 'small.bin' holds 5 bytes, but its blob holds 1",
            ),
            (
                {"s.py": (script, len(script)), "neg.bin": (b"z", -(10**12))},
                "the snapshot's manifest has a negative file size",
            ),
        ]:
            snap = await _snapshot(bus, files)
            spec = m.RunSpec(experiment="lie", script="s.py", snapshot_id=snap)
            reply = await bus.nc.request(
                subjects.API_SUBMIT, codec.encode(m.SubmitRequest(spec=spec)), 10
            )
            body = json.loads(reply.data)
            assert body["type"] == "error" and body["code"] == "bad_request", body
            assert expected in body["message"], body["message"]
    finally:
        await bus.close()
    assert _run_ids(installation) == before
