"""How a queued run's wait for an agent is said (``RunRecord.waiting``): one sentence that the
scheduler's `run why`, `run show`, `sortie status` and the SDK's wait all print. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

from sortie.proto import messages as m


def ago(seconds: float) -> str:
    """A short duration: "40 s", "3 min", "2 h"."""
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.0f} h"


def describe(target: str, wait: m.TargetWait, now: float) -> str:
    """E.g. "target gpu-pool has no agent: its only node was stopped by the autoscaler at
    12:01:02 UTC (3 min ago)"."""
    at = datetime.fromtimestamp(wait.since, UTC).strftime("%H:%M:%S UTC")
    return f"target {target} has no agent: {wait.reason} (since {at}, {ago(now - wait.since)} ago)"
