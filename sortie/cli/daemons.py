"""`sortie up`, `sortie scheduler` and `sortie agent`: the daemons from the command line (and
`sortie agent list|drain|cordon|uncordon|preempt`, which administer agents)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sortie.bus.broker import TlsFiles
from sortie.bus.connection import BusAuth
from sortie.bus.profile import default_data_dir
from sortie.cli.bounds_flags import (
    add_blob_gc_flags,
    add_limit_flags,
    add_retention_flags,
    blob_gc_of,
    limits_of,
    retention_of,
)
from sortie.cli.common import UsageError, env_vars, with_client
from sortie.cli.credentials import add_ttl_option
from sortie.cli.output import EXIT_OK, EXIT_RUN_FAILED, add_output, emit
from sortie.cli.output import table as _table
from sortie.cli.web import port as web_port
from sortie.client.views import agent_view
from sortie.proto import messages as m

if TYPE_CHECKING:  # imported where used: only the daemon that starts loads its code
    from sortie.client.client import Client
    from sortie.proto.engines import Engine
    from sortie.scheduler.reconcile import Timing

_Commands = argparse._SubParsersAction


def run_up(args: argparse.Namespace) -> int:
    """`sortie up`: the broker, the scheduler and a local agent, until stopped."""
    from sortie.embedded import Bounds, up

    data_dir = args.data_dir or default_data_dir()
    return up(
        data_dir,
        args.host,
        args.port,
        sync_always=not args.no_fsync,
        gpu_pool=_gpu_pool(args.gpu_pool),
        auth_ttl_s=None if args.no_auth else args.creds_ttl,
        tls=_tls_files(args),
        metrics=(args.metrics_host, args.metrics_port) if args.metrics_port else None,
        store_limit=args.store_limit,
        dashboard_port=args.dashboard_port,
        schedulers=args.schedulers,
        bounds=Bounds(
            retention=retention_of(args), limits=limits_of(args), blob_gc=blob_gc_of(args)
        ),
    )


def run_agent_command(args: argparse.Namespace) -> int:
    """`sortie agent --target NAME` runs an agent; `sortie agent ACTION` administers them."""
    if args.agent_command is None:
        if not args.target:
            raise UsageError(
                "`sortie agent` needs --target NAME to run an agent, or an action: "
                "list, drain, cordon, uncordon, preempt"
            )
        return _daemon_agent(args)
    return with_client(args, lambda c: _agent_admin(c, args))


GPU_POOL_HELP = (
    "GPUs of this host the process node provider may give to cluster nodes: 'all' or "
    "indices like 0,1,2 (a node of a 1-GPU size gets one of them: one big host, per-GPU nodes)"
)


def _gpu_pool(value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    if value == "all":
        from sortie.agents.gpus import probe_gpus

        return tuple(d.index for d in probe_gpus())
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--gpu-pool takes 'all' or indices like 0,1 (got {value!r})") from None


def _schedulers(text: str) -> int:
    from sortie.up_schedulers import MAX_SCHEDULERS

    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_SCHEDULERS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of schedulers: give 1 to {MAX_SCHEDULERS}"
        )
    return n


def _store_size(text: str) -> int:
    from sortie.bus.store_limits import MIN_STORE_LIMIT, human, parse_size

    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size < MIN_STORE_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too small: give at least {human(MIN_STORE_LIMIT)}"
        )
    return size


def add_up(sub: _Commands[argparse.ArgumentParser]) -> None:
    """`sortie up`: broker, scheduler and a local agent in one process tree."""
    up = sub.add_parser("up")
    up.add_argument("--data-dir", type=Path, default=None, help="where state is kept")
    up.add_argument("--port", type=int, default=4222)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument(
        "--no-fsync", action="store_true", help="do not fsync every JetStream write (faster)"
    )
    up.add_argument("--gpu-pool", help=GPU_POOL_HELP)
    up.add_argument(
        "--dashboard-port",
        type=web_port,
        metavar="N",
        help="serve the dashboard on 127.0.0.1:N, open without a login there (default 8265, "
        "or none if that port is taken; 0: none)",
    )
    up.add_argument(
        "--store-limit",
        type=_store_size,
        metavar="SIZE",
        help="most the JetStream store may hold, e.g. 300MB or 20G (default: the free disk "
        "space at start, less a tenth of the disk); the broker refuses writes past it",
    )
    add_ttl_option(up)
    up.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this certificate")
    up.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    up.add_argument(
        "--tls-ca",
        dest="up_tls_ca",
        type=Path,
        metavar="PEM",
        help="the CA that signed --tls-cert, for clients to trust (recorded in the profile)",
    )
    up.add_argument(
        "--no-auth",
        action="store_true",
        help="start the broker without authentication: anyone who reaches its port may do "
        "anything (default: credentials per role, made under DATA_DIR/auth)",
    )
    up.add_argument(
        "--schedulers",
        type=_schedulers,
        default=1,
        metavar="N",
        help="run N schedulers as child processes, one leading and the others standing by, "
        "each started again when it exits (to try a takeover: kill the leader's pid from "
        "`sortie status`); with --metrics-port P, scheduler K serves on P+K-1 (default 1, "
        "in this process)",
    )
    _metrics_options(up)
    add_retention_flags(up)
    add_blob_gc_flags(up)
    add_limit_flags(up)


def add_scheduler(sub: _Commands[argparse.ArgumentParser]) -> None:
    """`sortie scheduler`: the scheduler daemon alone."""
    sched = sub.add_parser("scheduler")
    sched.add_argument("--lease", type=float, default=10.0, help="seconds before an agent is lost")
    sched.add_argument(
        "--kill-grace",
        type=float,
        default=10.0,
        help="after the lease, seconds more before a lost agent's runs are requeued",
    )
    sched.add_argument(
        "--report-grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a live agent lists a run's attempt as finished but its report has not come for "
        "this long: the run is requeued (canceled if asked, failed if finalizing; default 60)",
    )
    sched.add_argument(
        "--unheld",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a live agent has not listed a run's attempt at all this long after its "
        "assignment: the run is requeued (canceled if asked; default 60)",
    )
    sched.add_argument(
        "--leader-lease",
        type=float,
        default=None,
        metavar="SECONDS",
        help="several schedulers on one broker: one leads, renewing its lease every third of "
        "this; a standby takes over a lease left unrenewed this long (default 10)",
    )
    sched.add_argument(
        "--snapshot-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the leader stores a snapshot of the runs in flight this often when any run "
        "changed (and after every 20,000 record writes): a start or takeover reads it and the "
        "records stored after it, not every run ever stored (default 30)",
    )
    sched.add_argument("--data-dir", type=Path, default=None, help="node provider files")
    sched.add_argument("--gpu-pool", help=GPU_POOL_HELP)
    add_ttl_option(sched)
    sched.add_argument(
        "--account-key",
        type=Path,
        metavar="FILE",
        help="the authority's account.nk (`sortie auth init`): mint credentials for the agents "
        "the scheduler starts (cluster nodes, attached machines)",
    )
    sched.add_argument(
        "--replicas",
        type=int,
        choices=(1, 3, 5),
        help="copies the broker cluster keeps of every stream and bucket (3 on a 3-node "
        "cluster); existing ones are changed to it (default: keep them, create with 1)",
    )
    sched.add_argument(
        "--store-limit",
        type=_store_size,
        metavar="SIZE",
        help="the broker's JetStream max_file_store (e.g. 20G): shared out among blobs, logs "
        "and metrics so that run reports still fit when they are full (default: streams keep "
        "their own limits)",
    )
    _metrics_options(sched)
    add_retention_flags(sched)
    add_blob_gc_flags(sched)


def add_agent(sub: _Commands[argparse.ArgumentParser]) -> None:
    """`sortie agent`: the agent daemon's options (with --target), or an admin action."""
    agent = sub.add_parser(
        "agent",
        description="With --target: run an agent daemon. With an action: administer agents.",
    )
    agent.add_argument("--target", help="compute target this agent serves (daemon mode)")
    agent.add_argument("--name", help="agent id (default TARGET-HOSTNAME)")
    agent.add_argument("--data-dir", type=Path, default=None)
    agent.add_argument("--cpus", type=float, help="advertise this many CPUs (default: all)")
    agent.add_argument("--memory-mb", type=int, help="advertise this much memory")
    agent.add_argument("--gpus", help="serve only these GPU indices, e.g. 0,1 (default: all)")
    agent.add_argument("--priority", choices=("dedicated", "lowpriority"), default="dedicated")
    agent.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    agent.add_argument("--preempt-grace", type=float, default=30.0, metavar="SECONDS")
    agent.add_argument(
        "--kill-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a stopped run gets SIGTERM, then SIGKILL this much later (keep <= the "
        "scheduler's --kill-grace)",
    )
    agent.add_argument(
        "--engine",
        metavar="JSON",
        help="hand every run to an engine instead of running it here, e.g. "
        '\'{"engine": "slurm", "partition": "gpu"}\' or \'{"engine": "spark", "master": '
        '"spark://head:7077"}\' (set by `sortie compute attach --type slurm|spark`)',
    )
    agent.add_argument(
        "--exit-with-parent",
        type=int,
        metavar="PID",
        help="stop runs and exit when process PID (the one that started this agent) is gone",
    )
    agent.add_argument(
        "--exit-when-refused",
        action="store_true",
        help="give runs back and exit once the broker refuses this agent's credentials for "
        "good (revoked or expired); agents started over SSH use it",
    )
    agent.add_argument(
        "--run-user",
        metavar="USER",
        help="as root, start runs as this unprivileged user (default: sortie-run)",
    )
    agent.add_argument(
        "--run-uids",
        metavar="FIRST-LAST",
        help="as root, start each concurrent run as its own uid from this range",
    )
    agent.add_argument(
        "--lease",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="cut off from the broker this long, stop every run (keep <= the scheduler's)",
    )
    add_limit_flags(agent)
    admin = agent.add_subparsers(dest="agent_command", metavar="ACTION")
    al = admin.add_parser("list", help="agents with their state, capacity and GPUs")
    add_output(al)
    for action, text in (
        ("drain", "finish current runs, take no new ones"),
        ("cordon", "take no new runs"),
        ("uncordon", "take runs again (ends a drain too)"),
        ("preempt", "simulate a low-priority preemption notice for this node"),
    ):
        a = admin.add_parser(action, help=text)
        a.add_argument("name", help="agent (node) id")
        add_output(a)


def _metrics_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the scheduler's Prometheus metrics at http://HOST:PORT/metrics "
        "(default: not served; deploy/ uses 9478)",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics endpoint listens on (default 127.0.0.1; 0.0.0.0 for all)",
    )


def _daemon_auth(args: argparse.Namespace) -> BusAuth:
    """A daemon's credentials: --creds / --tls-ca, else SORTIE_CREDS / SORTIE_TLS_CA (never
    the user's profile: a daemon runs as its own identity)."""
    env = BusAuth.from_env()
    return BusAuth(
        creds=args.creds or env.creds,
        tls_ca=args.tls_ca or env.tls_ca,
        tls_hostname=args.tls_hostname,
    )


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.up_tls_ca is not None:
            raise UsageError("--tls-ca is for TLS: give --tls-cert and --tls-key too")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise UsageError("TLS needs both --tls-cert and --tls-key (PEM files)")
    files = [args.tls_cert, args.tls_key] + ([args.up_tls_ca] if args.up_tls_ca else [])
    for path in files:
        if not path.is_file():
            raise UsageError(f"{path} is not a file: give the PEM file's path")
    ca = args.up_tls_ca.resolve() if args.up_tls_ca else None
    return TlsFiles(cert=args.tls_cert.resolve(), key=args.tls_key.resolve(), ca=ca)


def _lock_data_dir(data_dir: Path, command: str) -> None:
    """Hold ``data_dir`` for this daemon until it exits (bus.datadir), or refuse to start."""
    from sortie.bus.datadir import DataDirLocked, lock_data_dir

    try:
        lock_data_dir(data_dir.expanduser().resolve(), command)  # released when we exit
    except DataDirLocked as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot use the data directory {data_dir}: {exc}") from None


def _timing(args: argparse.Namespace) -> Timing:
    """The scheduler's timing from its flags; a flag left out keeps ``Timing``'s default."""
    from sortie.scheduler.reconcile import Timing

    given = {
        "lease_s": args.lease,
        "kill_grace_s": args.kill_grace,
        "report_grace_s": args.report_grace,
        "unheld_s": args.unheld,
    }
    return Timing(**{name: value for name, value in given.items() if value is not None})


def run_scheduler_command(args: argparse.Namespace) -> int:
    from sortie.bus.profile import resolve_url
    from sortie.embedded import _run
    from sortie.scheduler.daemon import SchedulerConfig, run_scheduler
    from sortie.scheduler.lease import DEFAULT_LEASE_S, Deposed
    from sortie.scheduler.run_snapshot import SNAPSHOT_EVERY_S

    data_dir = args.data_dir or default_data_dir() / "scheduler"
    _lock_data_dir(data_dir, "sortie scheduler")
    config = SchedulerConfig(
        url=resolve_url(args.url),
        timing=_timing(args),
        data_dir=data_dir,
        gpu_pool=_gpu_pool(args.gpu_pool),
        replicas=args.replicas,
        store_limit=args.store_limit,
        auth=_daemon_auth(args),
        account_key=args.account_key,
        creds_ttl_s=args.creds_ttl,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        retention=retention_of(args),
        blob_gc=blob_gc_of(args),
        leader_lease_s=args.leader_lease or DEFAULT_LEASE_S,
        snapshot_every_s=args.snapshot_every or SNAPSHOT_EVERY_S,
    )
    try:
        _run(_until_signal(lambda stop: run_scheduler(config, stop)))
    except Deposed:  # logged; its supervisor starts it again, as a standby
        return EXIT_RUN_FAILED
    return EXIT_OK


def _daemon_agent(args: argparse.Namespace) -> int:
    from sortie.agents.config import AgentConfig, default_agent_id
    from sortie.agents.daemon import run_agent
    from sortie.bus.profile import resolve_url
    from sortie.embedded import _run
    from sortie.proto.subjects import check_token

    agent_id = args.name or default_agent_id(args.target)
    try:
        check_token("agent name", agent_id)
        check_token("target", args.target)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    data_dir = args.data_dir or default_data_dir() / "agents" / agent_id
    _lock_data_dir(data_dir, "sortie agent")
    gpu_indices = None
    if args.gpus is not None:
        try:
            gpu_indices = [int(x) for x in args.gpus.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--gpus takes GPU indices like 0,1 (got {args.gpus!r})") from None
    capacity = None
    if args.cpus is not None or args.memory_mb is not None:
        from sortie.agents.facts import host_capacity
        from sortie.agents.gpus import GpuConfigError, probe_gpus, restrict

        try:
            # GPUs: only those this agent serves (--gpus), as the agent itself counts them
            host = host_capacity(restrict(probe_gpus(), gpu_indices))
        except GpuConfigError as exc:
            raise UsageError(str(exc)) from None
        capacity = m.Capacity(
            cpus=args.cpus if args.cpus is not None else host.cpus,
            memory_mb=args.memory_mb if args.memory_mb is not None else host.memory_mb,
            gpus=host.gpus,
            gpu_type=host.gpu_type,
        )
    config = AgentConfig(
        url=resolve_url(args.url),
        agent_id=agent_id,
        target=args.target,
        data_dir=data_dir,
        capacity=capacity,
        labels=env_vars(args.label, flag="--label"),
        priority=args.priority,
        gpu_indices=gpu_indices,
        preempt_grace_s=args.preempt_grace,
        lease_s=args.lease,
        exit_with_parent=args.exit_with_parent,
        exit_when_refused=args.exit_when_refused,
        kill_grace_s=args.kill_grace,
        auth=_daemon_auth(args),
        limits=limits_of(args),
        run_user=args.run_user,
        run_uids=args.run_uids,
        engine=engine_of(args.engine),
    )
    from sortie.agents.executors.sandbox import IsolationError
    from sortie.agents.gpus import GpuConfigError

    try:
        _run(_until_signal(lambda stop: run_agent(config, stop)))
    except (GpuConfigError, IsolationError) as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def engine_of(text: str | None) -> Engine | None:
    """``--engine JSON`` as an engine, or a UsageError saying what is wrong."""
    if text is None:
        return None
    import msgspec

    from sortie.proto.engines import Engine, problem

    try:
        engine: Engine = msgspec.json.decode(text, type=Engine)
    except msgspec.DecodeError as exc:
        raise UsageError(f'--engine: {exc}; give JSON such as \'{{"engine": "slurm"}}\'') from None
    why = problem(engine)
    if why is not None:
        raise UsageError(f"--engine: {why}")
    return engine


async def _until_signal(start: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await start(stop)


async def _agent_admin(client: Client, args: argparse.Namespace) -> int:
    if args.agent_command == "list":
        reply = await client.agents(m.AgentList())
        agents = reply.agents
    else:
        reply = await client.agents(m.AgentAdmin(agent_id=args.name, action=args.agent_command))
        agents = [reply.agent]
    if args.output != "text":
        emit([agent_view(a) for a in agents], args.output)
        return EXIT_OK
    rows = [("AGENT", "TARGET", "STATE", "PRIORITY", "CPUS", "MEMORY", "GPUS", "FLAGS")]
    for a in agents:
        flags = ",".join(
            f
            for f, on in (
                ("cordoned", a.cordoned),
                ("draining", a.draining),
                (f"engine={a.engine}", a.engine is not None),
            )
            if on
        )
        gpus = f"{a.capacity.gpus}" + (f" {a.capacity.gpu_type}" if a.capacity.gpu_type else "")
        rows.append(
            (
                a.agent_id,
                a.target,
                a.state,
                a.priority,
                f"{a.capacity.cpus:g}",
                f"{a.capacity.memory_mb} MB",
                gpus,
                flags or "-",
            )
        )
    _table(rows)
    return EXIT_OK
