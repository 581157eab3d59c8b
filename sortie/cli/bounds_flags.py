"""The flags that bound what runs keep: stream retention and the blob sweep (`sortie up`,
`sortie scheduler`) and per-run limits (`sortie up`, `sortie agent`). A bad value is refused
by argparse: the message names the flag and the rule, exit 2."""

from __future__ import annotations

import argparse
import math
import sys

from sortie.agents.limits import MB, RunLimits
from sortie.bus.retention import DAY_S, GB, MIN_AGE_S, Retention
from sortie.scheduler.blob_gc import HOUR_S, BlobGc


def non_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 0 or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a number, 0 or more, got {value!r}")
    return number


def _age_days(value: str) -> float:
    days = non_negative(value)
    if 0 < days * DAY_S < MIN_AGE_S:
        raise argparse.ArgumentTypeError(
            f"must be 0 (keep forever) or at least {MIN_AGE_S:g} seconds "
            f"({MIN_AGE_S / DAY_S:.4f} days), got {value!r}"
        )
    return days


def _count(value: str) -> int:
    number = non_negative(value)
    if number != int(number):
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}")
    return int(number)


def add_retention_flags(p: argparse.ArgumentParser) -> None:
    d = Retention()
    g = p.add_argument_group(
        "retention", "how long and how much output the broker keeps (0: no limit; oldest go first)"
    )
    g.add_argument(
        "--logs-max-age-days", type=_age_days, default=d.logs_max_age_s / DAY_S, metavar="DAYS"
    )
    g.add_argument("--logs-max-gb", type=non_negative, default=d.logs_max_bytes / GB, metavar="GB")
    g.add_argument(
        "--metrics-max-age-days",
        type=_age_days,
        default=d.metrics_max_age_s / DAY_S,
        metavar="DAYS",
    )
    g.add_argument(
        "--metrics-max-gb", type=non_negative, default=d.metrics_max_bytes / GB, metavar="GB"
    )


def add_blob_gc_flags(p: argparse.ArgumentParser) -> None:
    d = BlobGc()
    g = p.add_argument_group(
        "blob garbage collection", "the scheduler's sweep of unreferenced blobs"
    )
    g.add_argument(
        "--blob-gc-every-hours",
        type=non_negative,
        default=d.every_s / HOUR_S,
        metavar="HOURS",
        help="how often (0: never; `sortie gc` still does it)",
    )
    g.add_argument(
        "--blob-grace-hours",
        type=non_negative,
        default=d.grace_s / HOUR_S,
        metavar="HOURS",
        help="only blobs stored longer ago than this: uploads whose run is not recorded yet stay",
    )


def blob_gc_of(args: argparse.Namespace) -> BlobGc:
    return BlobGc(grace_s=args.blob_grace_hours * HOUR_S, every_s=args.blob_gc_every_hours * HOUR_S)


def retention_of(args: argparse.Namespace) -> Retention:
    return Retention(
        logs_max_age_s=args.logs_max_age_days * DAY_S,
        logs_max_bytes=int(args.logs_max_gb * GB),
        metrics_max_age_s=args.metrics_max_age_days * DAY_S,
        metrics_max_bytes=int(args.metrics_max_gb * GB),
    )


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    d = RunLimits()
    g = p.add_argument_group(
        "run limits",
        "what one run may publish (0: no limit); past a limit it keeps running, and its log "
        "says so",
    )
    g.add_argument(
        "--log-limit-mb",
        type=non_negative,
        default=d.log_bytes / MB,
        metavar="MB",
        help="log text per run; past it only the last --log-tail-lines lines are kept",
    )
    g.add_argument("--log-tail-lines", type=_count, default=d.tail_lines, metavar="N")
    g.add_argument(
        "--metric-limit",
        type=_count,
        default=d.metric_points,
        metavar="POINTS",
        help="metric points per run; past it the last point of each metric is kept",
    )
    g.add_argument(
        "--artifact-limit-mb",
        type=non_negative,
        default=d.artifact_bytes / MB,
        metavar="MB",
        help="outputs/ uploaded per run; files that do not fit are named in the log, not uploaded",
    )


def _or_none(limit: int) -> int:
    """0 means no limit, as for the streams' retention."""
    return limit if limit > 0 else sys.maxsize


def limits_of(args: argparse.Namespace) -> RunLimits:
    return RunLimits(
        log_bytes=_or_none(int(args.log_limit_mb * MB)),
        tail_lines=args.log_tail_lines,
        metric_points=_or_none(args.metric_limit),
        artifact_bytes=_or_none(int(args.artifact_limit_mb * MB)),
    )
