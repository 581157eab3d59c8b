"""The agent's configuration: one struct instead of long argument lists."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sortie.agents.disk_gc import DiskGcSettings
from sortie.agents.limits import RunLimits
from sortie.proto import messages as m
from sortie.proto.engines import Engine
from sortie.proto.subjects import check_token

if TYPE_CHECKING:
    from sortie.bus.connection import BusAuth


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    url: str
    agent_id: str
    target: str
    data_dir: Path
    heartbeat_interval_s: float = 1.0
    kill_grace_s: float = 10.0
    # Cut off from the broker this long, the agent stops its runs itself: the scheduler
    # requeues them after its own lease plus the kill grace, so keep this <= its lease.
    lease_s: float = 10.0
    capacity: m.Capacity | None = None  # None: measured from the host (agents.facts)
    finished_keep_s: float = 600.0  # how long a finished attempt stays in heartbeats
    finished_cap: int = 200
    snapshot_concurrency: int = 16
    labels: dict[str, str] = field(default_factory=dict)  # matched by run constraints
    priority: m.NodePriority = "dedicated"  # lowpriority nodes can be preempted
    gpu_indices: list[int] | None = None  # serve only these GPUs (split a host per GPU)
    preempt_grace_s: float = 30.0  # SIGTERM -> SIGKILL on a preemption notice
    gpu_refresh_s: float = 5.0  # how often GPU memory/utilisation readings are refreshed
    docker_host: str | None = None  # the container engine; None: DOCKER_HOST or the usual socket
    engine_probe_s: float = 30.0  # how often the engine is probed (advertised in heartbeats)
    # The process that started this agent (a scheduler's process provider): when it is gone
    # (even SIGKILLed), the agent stops its runs and exits rather than outlive it as an orphan.
    exit_with_parent: int | None = None
    # stop (after giving its runs back) once the broker closed the connection for good: the
    # credentials were revoked or expired. Agents the scheduler starts over SSH set it, so a
    # detached machine's agent ends instead of running on unheard; `sortie up`'s does not.
    exit_when_refused: bool = False
    # A separate process that kills the runs when this agent cannot (paused, hung, dead):
    # see agents.watchdog.
    watchdog: bool = True
    # credentials (a .creds file for this agent's id) and TLS trust; None: SORTIE_CREDS and
    # SORTIE_TLS_CA, or nothing (a broker without authentication)
    auth: BusAuth | None = None
    limits: RunLimits = field(default_factory=RunLimits)  # per-run log/metric/artifact bounds
    disk_gc: DiskGcSettings = field(default_factory=DiskGcSettings)  # run dirs, env cache
    # an agent running as root starts runs as this user (None: agents.isolation's default),
    # or as one uid per concurrent run from this range ("FIRST-LAST"): agents.executors.sandbox
    run_user: str | None = None
    run_uids: str | None = None
    # hand every run to this engine (Slurm, Spark) instead of running it here: the agent of
    # an attached login or head node (agents.executors.slurm, .spark)
    engine: Engine | None = None


def default_agent_id(target: str, hostname: str | None = None) -> str:
    """``{target}-{hostname}`` with anything outside ``[A-Za-z0-9_-]`` replaced by ``-``."""
    host = hostname if hostname is not None else socket.gethostname()
    raw = f"{target}-{host}"
    clean = re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:128].strip("-") or "agent"
    return check_token("agent id", clean)
