"""Stream retention (bus.retention) on a real broker: set on the streams the scheduler made,
changed in place on a restart with other settings, and 0 is no limit."""

from __future__ import annotations

from sortie.bus.connection import Bus
from sortie.bus.retention import Retention, apply_retention
from sortie.proto import subjects


async def _limits(bus: Bus, stream: str) -> tuple[float, int]:
    cfg = (await bus.js.stream_info(stream)).config
    return cfg.max_age or 0.0, cfg.max_bytes or -1


async def test_retention_is_applied_and_changed_in_place(bus: Bus) -> None:
    # before: the streams as ensure_resources made them keep everything
    assert await _limits(bus, subjects.STREAM_LOGS) == (0.0, -1)
    await bus.js.publish(subjects.logs("r1", "a1"), b"{}")
    first = Retention(
        logs_max_age_s=3600, logs_max_bytes=5_000_000, metrics_max_age_s=7200, metrics_max_bytes=0
    )
    await apply_retention(bus.js, first)
    assert await _limits(bus, subjects.STREAM_LOGS) == (3600.0, 5_000_000)
    assert await _limits(bus, subjects.STREAM_METRICS) == (7200.0, -1)  # 0: no limit
    # a restart with other settings changes them; what was stored stays
    await apply_retention(bus.js, Retention(logs_max_age_s=0, logs_max_bytes=0))
    assert await _limits(bus, subjects.STREAM_LOGS) == (0.0, -1)
    assert (await bus.js.stream_info(subjects.STREAM_LOGS)).state.messages == 1


async def test_a_size_larger_than_the_store_is_lowered_until_it_fits(bus: Bus) -> None:
    await apply_retention(bus.js, Retention(logs_max_age_s=7200, logs_max_bytes=10**18))
    max_age, max_bytes = await _limits(bus, subjects.STREAM_LOGS)
    assert max_age == 7200.0
    assert 0 < max_bytes < 10**18
