"""What the agent advertises about its container engine, from the probes' answers.

An engine under load can miss a probe's deadline while it serves containers well; reporting
it gone at the first miss sends docker runs elsewhere (or leaves them queued) for a whole
probe interval. So a miss makes the engine's state *unknown*, and the last answer stays
advertised, until ``down_after`` probes in a row have failed: only then is it down (None).
An engine never seen is not advertised until it answers. The shell probes sooner while the
state is unknown (:func:`next_probe_s`), so a real outage is still found within seconds.

Pure: answers in, what to advertise out.
"""

from __future__ import annotations

from dataclasses import dataclass

DOWN_AFTER = 3  # consecutive failed probes before a known engine is reported down
RETRY_S = 5.0  # the wait before the next probe while the engine's state is unknown


@dataclass(frozen=True)
class EngineHealth:
    advertised: str | None = None  # what heartbeats say (``podman 4.3.1``); None: no engine
    misses: int = 0  # failed probes in a row since the last answer

    @property
    def unknown(self) -> bool:
        """A known engine missed its last probe(s) but is not yet judged down."""
        return self.advertised is not None and self.misses > 0


def probed(health: EngineHealth, answer: str | None, down_after: int = DOWN_AFTER) -> EngineHealth:
    """The health after a probe that got ``answer`` (None: no answer in time)."""
    if answer is not None:
        return EngineHealth(advertised=answer)
    misses = health.misses + 1
    if health.advertised is None or misses >= max(1, down_after):
        return EngineHealth(advertised=None, misses=misses)
    return EngineHealth(advertised=health.advertised, misses=misses)


def next_probe_s(health: EngineHealth, interval_s: float, retry_s: float = RETRY_S) -> float:
    """How long to wait before the next probe: sooner while the engine's state is unknown."""
    return min(interval_s, retry_s) if health.unknown else interval_s
