"""How long and how much run output the broker keeps: the logs and metrics streams' limits.

Set by the scheduler each time it starts (``sortie up`` / ``sortie scheduler`` flags), on new
and existing streams alike, so changing a setting and restarting applies it. Past a limit
the broker drops the *oldest* messages (``DiscardPolicy.OLD``): old runs lose their logs
first, and a run that is writing now is never refused. ``0`` means no limit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy

from sortie.proto import subjects

DAY_S = 86_400.0
GB = 1_000_000_000
# the streams' duplicate window (the JetStream default); a shorter max age is refused
MIN_AGE_S = 120.0
NO_STORAGE = 10047  # JetStream's "insufficient storage resources available"
MAX_HALVINGS = 64


@dataclass(frozen=True, kw_only=True)
class Retention:
    logs_max_age_s: float = 30 * DAY_S
    logs_max_bytes: int = 10 * GB
    metrics_max_age_s: float = 90 * DAY_S
    metrics_max_bytes: int = 2 * GB

    def byte_limits(self) -> dict[str, int]:
        """Stream name -> its size limit in bytes (0: none)."""
        return {stream: max(size, 0) for stream, (_age, size) in self.limits().items()}

    def limits(self) -> dict[str, tuple[float, int]]:
        """Stream name -> (max age in seconds, max bytes), as the broker takes them."""
        return {
            subjects.STREAM_LOGS: (self.logs_max_age_s, self.logs_max_bytes or -1),
            subjects.STREAM_METRICS: (self.metrics_max_age_s, self.metrics_max_bytes or -1),
        }


async def apply_retention(
    js: JetStreamContext, retention: Retention, capped: frozenset[str] = frozenset()
) -> None:
    """Give the logs and metrics streams ``retention``'s limits (the streams exist: the
    scheduler made them). A size larger than the broker can reserve is halved until it can
    (logged); a limit it refuses otherwise is logged and the stream keeps its old limits: the
    scheduler still starts. A stream in ``capped`` keeps its size limit (the store limit's
    share, ``bus.store_limits``, governs it) and gets only its max age."""
    log = structlog.get_logger("sortie.bus")
    for stream, (max_age, wanted_bytes) in retention.limits().items():
        old = (await js.stream_info(stream)).config
        max_bytes = (old.max_bytes or -1) if stream in capped else wanted_bytes
        discard = old.discard if stream in capped else DiscardPolicy.OLD
        for _ in range(MAX_HALVINGS):
            if (old.max_age or 0) == max_age and (old.max_bytes or -1) == max_bytes:
                break
            new = dataclasses.replace(old, max_age=max_age, max_bytes=max_bytes, discard=discard)
            try:
                await js.update_stream(new)
            except nats.js.errors.APIError as exc:
                if exc.err_code == NO_STORAGE and max_bytes > 1:
                    max_bytes //= 2
                    continue
                log.warning(
                    "stream retention not applied",
                    stream=stream,
                    max_age_s=max_age,
                    max_bytes=max_bytes,
                    error=exc.description,
                )
                break
            cut = stream not in capped and max_bytes != wanted_bytes  # halved to fit
            level = log.warning if cut else log.info
            level(
                "stream retention set",
                stream=stream,
                max_age_s=max_age,
                max_bytes=max_bytes,
                wanted_bytes=wanted_bytes,
            )
            break
