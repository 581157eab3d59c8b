"""The agent reads a run's outputs/ without trusting it (agents.outputs): never through a link
leaving outputs/, never a file that is not the run's own, even when swapped in after the scan;
a real blob store shows what was and was not uploaded."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from sortie.agents.attempt import upload_outputs
from sortie.agents.outputs import UnsafeOutput, open_output, scan_outputs
from sortie.bus.blobs import has_blob, sha256_bytes
from sortie.bus.connection import Bus

SECRET = b"account seed: SA...never uploaded\n"


def _run_dir(tmp_path: Path) -> tuple[Path, Path, Path]:
    workdir = tmp_path / "work"
    outputs = workdir / "outputs"
    (outputs / "sub").mkdir(parents=True)
    (outputs / "model.bin").write_bytes(b"weights")
    (outputs / "sub" / "metrics.json").write_text("{}")
    secret = tmp_path / "private" / "account.nk"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    return workdir, outputs, secret


def test_links_leaving_outputs_and_non_files_are_skipped_links_inside_kept(
    tmp_path: Path,
) -> None:
    workdir, outputs, secret = _run_dir(tmp_path)
    (outputs / "leak").symlink_to(secret)
    (outputs / "same").symlink_to(outputs / "model.bin")
    os.mkfifo(outputs / "pipe")
    found, skipped = scan_outputs(workdir)
    assert {f[0]: f[1] for f in found} == {
        "outputs/model.bin": "model.bin",
        "outputs/same": "model.bin",
        "outputs/sub/metrics.json": "sub/metrics.json",
    }
    assert "outputs/leak (a link leaving outputs/)" in skipped
    assert any(s.startswith("outputs/pipe (") and "not a regular file" in s for s in skipped)


def test_a_file_swapped_for_a_link_after_the_scan_is_refused(tmp_path: Path) -> None:
    workdir, outputs, secret = _run_dir(tmp_path)
    found, _ = scan_outputs(workdir)
    assert ("outputs/model.bin", "model.bin") in [(f[0], f[1]) for f in found]
    (outputs / "model.bin").unlink()
    (outputs / "model.bin").symlink_to(secret)  # the race a run could win
    owner = outputs.stat().st_uid
    with pytest.raises(UnsafeOutput, match="changed into a link"):
        open_output(outputs.resolve(), "model.bin", owner)
    (outputs / "sub").rename(outputs / "sub-real")
    (outputs / "sub").symlink_to(secret.parent)  # a directory component swapped
    with pytest.raises(UnsafeOutput, match="changed into a link"):
        open_output(outputs.resolve(), "sub/metrics.json", owner)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_file_that_is_not_the_runs_own_is_refused(tmp_path: Path) -> None:
    """A run user's outputs dir holding a root-owned file (a hard link to one, where the
    kernel's protected_hardlinks is off) is not read."""
    workdir, outputs, _secret = _run_dir(tmp_path)
    run_user = pwd.getpwnam("sortie-run")
    for path in (outputs, outputs / "model.bin", outputs / "sub", outputs / "sub" / "metrics.json"):
        os.chown(path, run_user.pw_uid, run_user.pw_gid)
    (outputs / "roots.txt").write_text("the agent's, not the run's")  # owned by root
    found, skipped = scan_outputs(workdir)
    assert sorted(f[0] for f in found) == ["outputs/model.bin", "outputs/sub/metrics.json"]
    assert any("outputs/roots.txt" in s and "not the run's own file" in s for s in skipped)


async def test_upload_never_sends_what_a_swapped_link_points_at(bus: Bus, tmp_path: Path) -> None:
    workdir, outputs, secret = _run_dir(tmp_path)
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("uploading outputs"):  # between the scan and the upload
            (outputs / "model.bin").unlink()
            (outputs / "model.bin").symlink_to(secret)

    artifacts = await upload_outputs(bus.blobs, workdir, say, js=bus.js)
    assert [a.path for a in artifacts] == ["outputs/sub/metrics.json"]
    assert any("cannot upload outputs/model.bin" in s and "link" in s for s in said), said
    assert not await has_blob(bus.blobs, sha256_bytes(SECRET))
    assert not await has_blob(bus.blobs, sha256_bytes(b"weights"))
