"""The bounds' flags (cli.bounds_flags) as argparse reads them: defaults, units, 0 = no limit."""

from __future__ import annotations

import argparse
import sys

import pytest

from sortie.agents.limits import RunLimits
from sortie.bus.retention import Retention
from sortie.cli.bounds_flags import (
    add_blob_gc_flags,
    add_limit_flags,
    add_retention_flags,
    blob_gc_of,
    limits_of,
    retention_of,
)
from sortie.scheduler.blob_gc import BlobGc


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_limit_flags(p)
    add_retention_flags(p)
    add_blob_gc_flags(p)
    return p.parse_args(argv)


def test_defaults_are_the_structs_defaults() -> None:
    args = _parse()
    assert limits_of(args) == RunLimits()
    assert retention_of(args) == Retention()
    assert blob_gc_of(args) == BlobGc()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--log-limit-mb", "0.02", "--log-tail-lines", "20"), {"log_bytes": 20_000}),
        (
            (
                "--log-limit-mb",
                "0",
            ),
            {"log_bytes": sys.maxsize},
        ),
        (("--metric-limit", "0", "--artifact-limit-mb", "0"), {"metric_points": sys.maxsize}),
        (
            (
                "--artifact-limit-mb",
                "1.5",
            ),
            {"artifact_bytes": 1_500_000},
        ),
    ],
)
def test_limits(argv: tuple[str, ...], expected: dict[str, int]) -> None:
    limits = limits_of(_parse(*argv))
    for name, value in expected.items():
        assert getattr(limits, name) == value


def test_retention_and_sweep_units() -> None:
    args = _parse("--logs-max-age-days", "2", "--logs-max-gb", "0", "--blob-grace-hours", "1.5")
    assert retention_of(args).logs_max_age_s == 2 * 86_400
    assert retention_of(args).limits()["SORTIE_LOGS"] == (2 * 86_400, -1)  # 0: no limit
    assert blob_gc_of(args).grace_s == 5400
