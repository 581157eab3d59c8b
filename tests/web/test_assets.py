"""The vendored front-end assets are the files their README names, and ship in the package."""

from __future__ import annotations

import hashlib
from pathlib import Path

import sortie.web

VENDOR = Path(sortie.web.__file__).parent / "static" / "vendor"


def test_vendored_files_match_their_recorded_hashes() -> None:
    lines = (VENDOR / "SHA256SUMS").read_text().splitlines()
    assert lines, "SHA256SUMS lists the vendored files"
    for line in lines:
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_the_chart_library_is_a_real_build() -> None:
    text = (VENDOR / "uPlot.iife.min.js").read_text()
    assert text.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */"), text[:80]
    assert "var uPlot=" in text[:2000]
