"""The scheduler's snapshot limit: 10 GiB unless SORTIE_SNAPSHOT_LIMIT_MB says otherwise."""

from __future__ import annotations

import pytest

from sortie.scheduler.daemon import SchedulerConfig
from sortie.scheduler.snapshot_check import snapshot_limit_bytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 10 * 1024**3),
        ("512", 512 * 1024**2),
        (" 2048 ", 2048 * 1024**2),
        ("0", 10 * 1024**3),  # refused: logged, the default kept
        ("lots", 10 * 1024**3),
    ],
)
def test_the_limit_comes_from_the_environment(
    value: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("SORTIE_SNAPSHOT_LIMIT_MB", raising=False)
    else:
        monkeypatch.setenv("SORTIE_SNAPSHOT_LIMIT_MB", value)
    assert snapshot_limit_bytes() == expected
    assert SchedulerConfig(url="nats://x").snapshot_limit_bytes == expected
