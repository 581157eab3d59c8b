"""Bytes sent when re-submitting a source tree: unchanged, and after editing one file.

Makes a tree of ``--files`` files (default 2,500, about ``--file-bytes`` each, in nested
folders), starts a real ``sortie up`` and submits the tree three times through the client
library: first (everything is new), again unchanged, then after rewriting one file. For each
submit it reports the blob bytes the client uploaded (``Submission.snapshot.uploaded_bytes``:
file contents and the manifest) and every byte the client's connection sent to the broker
(nats-py's ``out_bytes``: hash checks, validation, upload, the submit request itself).

With ``--ray`` it also asks Ray (``-m benchmarks.peers ray-bytes``, run with
``--ray-python``) how large the ``working_dir`` package it would upload is, before and after
the same edit: Ray content-addresses the whole directory as one zip, so any change re-sends
all of it.

    .venv/bin/python -m benchmarks.snapshot_bytes [--files 2500] [--file-bytes 2000] [--ray]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.latency import start_up
from sortie.bus.broker import free_port
from sortie.client.client import Client
from sortie.client.runconfig import ScriptRunConfig
from sortie.client.snapshot import build_manifest

REPO = Path(__file__).resolve().parents[1]


def make_tree(root: Path, files: int, size: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(files):
        p = root / f"pkg{i % 25:02d}" / f"mod{i % 7}" / f"file{i:05d}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(rng.choice("abcdefghij \n") for _ in range(size))
        p.write_text(f"# file {i}\n{body}\n")
        paths.append(p)
    (root / "train.py").write_text("print('hello')\n")
    return paths


async def submit(client: Client, src: Path) -> dict[str, int]:
    before = client.bus.nc.stats["out_bytes"]
    config = ScriptRunConfig(source_directory=src, script="train.py")
    sub = await client.submit(config, experiment="bytes")
    await client.bus.nc.flush()
    return {
        "files": sub.snapshot.files,
        "tree_bytes": sub.snapshot.bytes,
        "uploaded_files": sub.snapshot.uploaded_files,
        "uploaded_bytes": sub.snapshot.uploaded_bytes,
        "wire_bytes_out": int(client.bus.nc.stats["out_bytes"] - before),
    }


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    src = root / "src"
    paths = make_tree(src, args.files, args.file_bytes, args.seed)
    proc = start_up(root, free_port())
    try:
        client = await Client.connect()
        first = await submit(client, src)
        unchanged = await submit(client, src)
        edited = paths[len(paths) // 2]
        edited.write_text(edited.read_text() + "# one more line\n")
        one_edit = await submit(client, src)
        manifest = len(build_manifest(src).encoded[1])
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {
        "first": first,
        "unchanged": unchanged,
        "one_file_edited": one_edit,
        "edited_file_bytes": edited.stat().st_size,
        "manifest_bytes": manifest,
        "one_edit_blob_bytes": one_edit["uploaded_bytes"] + manifest,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=2500)
    p.add_argument("--file-bytes", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ray", action="store_true")
    p.add_argument("--ray-python", default="/tmp/ray-venv/bin/python")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sortie-bytes-") as tmp:
        result: dict[str, Any] = {"sortie": asyncio.run(measure(args, Path(tmp)))}
        if args.ray:
            src = Path(tmp) / "ray-src"
            paths = make_tree(src, args.files, args.file_bytes, args.seed)
            cmd = [args.ray_python, "-m", "benchmarks.peers", "ray-bytes",
                   "--dir", str(src), "--edit", str(paths[len(paths) // 2])]  # fmt: skip
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=600, check=False, cwd=REPO
            )
            result["ray"] = (
                json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-2000:]}
            )
    s = result["sortie"]
    result["met"] = {
        "unchanged_blob_bytes_le_1KB": s["unchanged"]["uploaded_bytes"] <= 1024,
        "one_edit_le_file_plus_manifest": s["one_file_edited"]["uploaded_files"] <= 1,
    }
    print(json.dumps(result, indent=2))
    lines = [
        f"tree: {s['first']['files']} files, {s['first']['tree_bytes']:,} bytes",
        f"{'':<28}{'blob bytes':>12}{'wire bytes':>12}",
    ]
    for name in ("first", "unchanged", "one_file_edited"):
        d = s[name]
        lines.append(f"{name:<28}{d['uploaded_bytes']:>12,}{d['wire_bytes_out']:>12,}")
    lines.append(
        f"one edit: file {s['edited_file_bytes']:,} B + manifest {s['manifest_bytes']:,} B "
        "(blob bytes above count file contents; the manifest goes up too)"
    )
    r = result.get("ray", {})
    if "edited_upload_bytes" in r:
        lines.append(
            f"ray working_dir: unchanged {r['unchanged_upload_bytes']:,} B, one edit "
            f"{r['edited_upload_bytes']:,} B (the whole zip)"
        )
    print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
