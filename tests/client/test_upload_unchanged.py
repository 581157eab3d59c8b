"""Re-submitting an unchanged tree: one existence check (its manifest), not one per file."""

from __future__ import annotations

from pathlib import Path

from sortie.bus.connection import Bus
from sortie.client.snapshot import build_manifest, upload_snapshot


async def test_an_unchanged_tree_costs_one_check(bus: Bus, tmp_path: Path) -> None:
    root = tmp_path / "src"
    for i in range(200):
        (root / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 5}" / f"f{i}.py").write_text(f"x = {i}\n")
    plan = build_manifest(root)
    first = await upload_snapshot(bus, plan)
    assert first.uploaded_files == 200
    before = bus.nc.stats["out_msgs"]
    again = await upload_snapshot(bus, build_manifest(root))
    assert (again.uploaded_files, again.uploaded_bytes, again.manifest_bytes) == (0, 0, 0)
    assert bus.nc.stats["out_msgs"] - before <= 2  # the manifest's check, not 201 checks
    # one file edited: that file and the new manifest go up, nothing else
    (root / "d0" / "f0.py").write_text("x = 'edited'\n")
    edited = await upload_snapshot(bus, build_manifest(root))
    assert edited.uploaded_files == 1
    assert edited.uploaded_bytes == len("x = 'edited'\n")
    assert edited.manifest_bytes > 0
