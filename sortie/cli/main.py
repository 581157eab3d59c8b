"""The `sortie` command line. Each command is a thin layer over sortie.client."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, cast

from sortie.bus.auth import AuthError
from sortie.bus.broker import TlsFiles
from sortie.bus.connection import BusAuth
from sortie.bus.errors import AccessDenied, BrokerUnreachable, NotInitialised
from sortie.bus.logs import LEVELS, configure
from sortie.bus.metrics_http import MetricsPortError
from sortie.bus.profile import default_data_dir
from sortie.cli.bounds_flags import (
    add_blob_gc_flags,
    add_limit_flags,
    add_retention_flags,
    blob_gc_of,
    limits_of,
    retention_of,
)
from sortie.cli.credentials import add_auth, add_ttl_option, run_auth
from sortie.cli.gc import add_gc, run_gc
from sortie.cli.jobfile import MEMORY_FLAGS, PYTHON_FLAGS, JobFileError, flag_defaults, load
from sortie.cli.models import add_model, run_model
from sortie.cli.output import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    ArgvError,
    Parser,
    add_output,
    emit,
    refuse_argv,
)
from sortie.cli.output import error as print_error
from sortie.cli.output import size as _size
from sortie.cli.output import table as _table
from sortie.cli.runs import HANDLERS as RUN_HANDLERS
from sortie.cli.runs import add_list_filters, print_outcome
from sortie.cli.sweeps import add_sweep, sweep_action
from sortie.cli.web import add_web, run_web
from sortie.cli.web import port as web_port
from sortie.cli.workspace import add_workspace, run_workspace
from sortie.client import envspec
from sortie.client.client import (
    Client,
    ClientError,
    NoScheduler,
    NotFound,
    RequestRefused,
    echo_line,
)
from sortie.client.runconfig import (
    AmlComputeSection,
    DockerSettings,
    EnvironmentSection,
    PythonSection,
    RunConfigError,
    RunConfiguration,
    ScriptRunConfig,
)
from sortie.client.snapshot import SnapshotError
from sortie.client.sweep_space import SweepConfigError
from sortie.client.views import (
    ComputeView,
    MachineView,
    SubmittedView,
    agent_view,
    compute_view,
    iso,
    machine_view,
)
from sortie.proto import agent_env
from sortie.proto import messages as m
from sortie.proto.agent_env import redacted
from sortie.web.settings import WebError

if TYPE_CHECKING:  # imported where used: a CLI call loads only what it needs
    from sortie.scheduler.reconcile import Timing

T = TypeVar("T")


class UsageError(Exception):
    pass


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


def _parser(submit_defaults: dict[str, object] | None = None) -> argparse.ArgumentParser:
    """The whole command line: global options, then one helper per command group
    (``submit_defaults``: a job file's settings, as `sortie run submit`'s defaults)."""
    p = Parser(prog="sortie", description="Run training scripts on your own machines.")
    _global_options(p)
    # the helpers take plain ArgumentParsers: Parser only changes how a refusal is printed
    sub = cast(
        "_Commands[argparse.ArgumentParser]",
        p.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    _add_up(sub)
    add_auth(sub)
    _add_scheduler(sub)
    _add_agent(sub)
    _add_compute(sub)
    status = sub.add_parser("status", help="computes, agents, queue and active runs at a glance")
    add_output(status)
    _add_run(sub, submit_defaults or {})
    add_model(sub)
    add_sweep(sub, submit_defaults or {}, _submit_options)
    add_gc(sub)
    add_workspace(sub)
    add_web(sub)
    return p


# argparse has no public name for the type `add_subparsers()` returns; this names it once.
_Commands = argparse._SubParsersAction


def _global_options(p: argparse.ArgumentParser) -> None:
    """Where the broker is, how to trust it, and the log level."""
    p.add_argument("--url", help="broker URL (default: SORTIE_URL, then the `sortie up` profile)")
    p.add_argument(
        "--creds",
        type=Path,
        metavar="FILE",
        help="broker credentials (default: SORTIE_CREDS, then the `sortie up` profile's)",
    )
    p.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="CA that signed the broker's TLS certificate (default: SORTIE_TLS_CA, then the "
        "profile's)",
    )
    p.add_argument(
        "--tls-hostname",
        metavar="NAME",
        help="check the broker's certificate against NAME (when connecting through a tunnel)",
    )
    p.add_argument("--log-level", choices=LEVELS, default="info")


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


def _add_up(sub: _Commands[argparse.ArgumentParser]) -> None:
    """`sortie up`: broker, scheduler and a local agent in one process tree."""
    up = sub.add_parser("up", help="start broker, scheduler and a local agent on this machine")
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
    _metrics_options(up)
    add_retention_flags(up)
    add_blob_gc_flags(up)
    add_limit_flags(up)


def _add_scheduler(sub: _Commands[argparse.ArgumentParser]) -> None:
    """`sortie scheduler`: the scheduler daemon alone."""
    sched = sub.add_parser("scheduler", help="run the scheduler alone against a broker")
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


def _add_agent(sub: _Commands[argparse.ArgumentParser]) -> None:
    """`sortie agent`: the agent daemon's options (with --target), or an admin action."""
    agent = sub.add_parser(
        "agent",
        help="run an agent (--target NAME), or list and administer agents",
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


def _add_compute(sub: _Commands[argparse.ArgumentParser]) -> None:
    """`sortie compute ...`: managed clusters and attached machines."""
    comp = sub.add_parser("compute", help="compute targets: managed clusters").add_subparsers(
        dest="compute_command", required=True, metavar="SUBCOMMAND"
    )
    cc = comp.add_parser("create", help="create an autoscaling cluster")
    cc.add_argument("name")
    cc.add_argument("--type", choices=("cluster",), default="cluster")
    cc.add_argument("--vm-size", required=True, help="a node size (`sortie compute sizes`)")
    cc.add_argument("--max-nodes", type=int, required=True)
    cc.add_argument("--min-nodes", type=int, default=0)
    cc.add_argument("--idle-seconds-before-scaledown", type=float, default=120.0)
    cc.add_argument("--vm-priority", choices=("dedicated", "lowpriority"), default="dedicated")
    cc.add_argument("--provider", default="process", help="process (default) or ssh")
    cc.add_argument("--hosts", help="provider ssh: the pool's machines, h1,h2,...")
    _ssh_options(cc, address=False)
    cu = comp.add_parser("update", help="change a cluster's node limits")
    cu.add_argument("name")
    cu.add_argument("--min-nodes", type=int)
    cu.add_argument("--max-nodes", type=int)
    cu.add_argument("--idle-seconds-before-scaledown", type=float)
    cd = comp.add_parser("delete", help="delete a cluster and stop its nodes")
    cd.add_argument("name")
    cd.add_argument(
        "--force",
        action="store_true",
        help="fail its queued runs (target_deleted) and cancel its active ones",
    )
    cs = comp.add_parser("show", help="a cluster: state, errors, nodes, autoscaler decisions")
    cs.add_argument("name")
    ca = comp.add_parser("attach", help="attach a machine over SSH as a compute target")
    ca.add_argument("name")
    ca.add_argument("--type", choices=("vm",), default="vm")
    _ssh_options(ca, address=True)
    ca.add_argument(
        "--advertised-url",
        help="the agent reaches the broker here (default: "
        "through a reverse port forward on the SSH connection)",
    )
    ca.add_argument(
        "--agent-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a variable for the remote agent and the environment builds it runs (proxy, CA: "
        "HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE, UV_*); repeatable",
    )
    ca.add_argument("--no-wait", action="store_true", help="return before the agent runs")
    cdt = comp.add_parser("detach", help="stop a machine's agent and remove what was installed")
    cdt.add_argument("name")
    cdt.add_argument("--keep-files", action="store_true", help="leave the install in place")
    cdt.add_argument(
        "--force",
        action="store_true",
        help="fail its queued runs (target_deleted), cancel its active ones, and forget the "
        "machine even if its agent cannot be stopped",
    )
    comp.add_parser("list", help="clusters")
    comp.add_parser("sizes", help="node sizes")
    for sp in (cc, cu, cd, cs, ca, cdt, comp.choices["list"], comp.choices["sizes"]):
        add_output(sp)


def _add_run(sub: _Commands[argparse.ArgumentParser], submit_defaults: dict[str, object]) -> None:
    """`sortie run ...`: submit runs and inspect them."""
    run = sub.add_parser("run", help="submit and inspect runs").add_subparsers(
        dest="run_command", required=True, metavar="SUBCOMMAND"
    )
    _add_run_submit(run, submit_defaults)

    lst = run.add_parser("list", help="runs, newest first")
    add_list_filters(lst)

    show = run.add_parser("show", help="one run's record")
    show.add_argument("run_id")

    logs = run.add_parser("logs", help="a run's output from the first line")
    logs.add_argument("run_id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep going until it ends")
    logs.add_argument("--rank", type=int, help="only this node of a multi-node run")

    cancel = run.add_parser("cancel", help="stop a run")
    cancel.add_argument("run_id")

    wait = run.add_parser("wait", help="wait for a run to end; exit 0 only if Completed")
    wait.add_argument("run_id")

    why = run.add_parser("why", help="why a run is still queued")
    why.add_argument("run_id")

    dl = run.add_parser("download", help="fetch a run's artifacts (its outputs/) into DEST/RUN_ID/")
    dl.add_argument("run_id")
    dl.add_argument("dest", type=Path)
    dl.add_argument("--flat", action="store_true", help="into DEST itself (DEST/outputs/...)")
    for sp in (lst, show, logs, cancel, wait, why, dl):
        add_output(sp)


def _add_run_submit(run: _Commands[argparse.ArgumentParser], defaults: dict[str, object]) -> None:
    """`sortie run submit`: what to run, in which environment, with which resources."""
    s = run.add_parser(
        "submit",
        help="snapshot a directory and run a script from it",
        description="Arguments for the script go after --arg (repeatable) or after `--`. "
        "With -f JOB.yml the run is described by a job file (docs/jobfile.schema.json); "
        "flags given as well override it (repeatable ones add to its lists).",
    )
    _submit_options(s)
    s.set_defaults(**defaults)


def _submit_options(s: argparse.ArgumentParser) -> None:
    """What `sortie run submit` and `sortie sweep submit` take: the run (a sweep's trials)."""
    s.add_argument("source_dir", type=Path, nargs="?", help="the folder to snapshot")
    s.add_argument("-f", "--file", dest="job_file", type=Path, metavar="JOB.yml", help="a job file")
    s.add_argument("--script", help="path of the script inside SOURCE_DIR")
    s.add_argument("--arg", action="append", default=[], dest="args", metavar="X")
    s.add_argument("--target", default="local")
    s.add_argument("--experiment", default="default")
    _submit_environment_options(s)
    _submit_resource_options(s)
    s.add_argument("--wait", action="store_true", help="stream output; exit 0 only if Completed")
    add_output(s)


def _submit_environment_options(s: argparse.ArgumentParser) -> None:
    """The run's Python environment, container and environment variables."""
    env = s.add_mutually_exclusive_group()
    env.add_argument("--python", help="use this interpreter as is (user-managed)")
    env.add_argument(
        "--pip",
        action="append",
        metavar="PKG",
        help="build an environment with this package (repeatable: --pip numpy --pip torch)",
    )
    env.add_argument("--requirements", type=Path, metavar="FILE")
    env.add_argument("--conda-file", type=Path, metavar="FILE")
    s.add_argument("--docker-image", metavar="IMAGE", help="run in a container from IMAGE")
    s.add_argument("--docker-shm-size", metavar="SIZE", help="the container's /dev/shm, e.g. 2g")
    s.add_argument(
        "--docker-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="an extra docker-run option: --ipc=host, --cap-add=X, --ulimit=..., "
        "--env=K=V (repeatable; write it as --docker-arg=--ipc=host)",
    )
    s.add_argument(
        "--docker-gpus",
        action="store_true",
        help="pass the run's GPUs into the container (device requests)",
    )
    s.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="NAME",
        help="pass $NAME from your environment to the run as a secret: its value is never "
        "stored in the run's record, shown or logged (values are never taken from the "
        "command line)",
    )


def _submit_resource_options(s: argparse.ArgumentParser) -> None:
    """What the run needs (time, CPUs, memory, GPUs, nodes), retries and placement hints."""
    s.add_argument("--max-duration", type=float, metavar="SECONDS")
    s.add_argument("--priority", type=int, default=0)
    s.add_argument("--cpus", type=float, default=1.0)
    mem = s.add_mutually_exclusive_group()
    mem.add_argument("--memory", type=float, metavar="GB", help="memory the run needs, in GB")
    mem.add_argument("--memory-mb", type=int)
    s.add_argument("--gpus", type=int, default=0)
    s.add_argument("--gpu-type", help="e.g. H100: matched within the agent's GPU name")
    s.add_argument("--node-count", type=int, default=1)
    s.add_argument("--max-retries", type=int, default=0, help="re-runs after a failure")
    s.add_argument(
        "--submission-id",
        metavar="ID",
        help="your id for this submission: submitting again with it gives the same run "
        "(safe retries from scripts)",
    )
    s.add_argument("--constraint", action="append", default=[], metavar="LABEL=VALUE")
    s.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag of the run"
    )
    s.add_argument("--dedicated-only", action="store_true", help="never on low-priority nodes")
    s.add_argument("--spread", action="store_true", help="prefer the emptiest agent")
    s.add_argument("--snapshot-limit-mb", type=float, default=None)
    s.add_argument(
        "--queue-timeout",
        type=float,
        metavar="SECONDS",
        help="fail the run (queue_timeout) if it is still queued after this long",
    )
    _submit_run_based_options(s)


def _submit_run_based_options(s: argparse.ArgumentParser) -> None:
    """--target amlcompute: a temporary cluster made for the run, deleted when it ends."""
    s.add_argument(
        "--vm-size",
        metavar="SIZE",
        help="with --target amlcompute: the size of the run's temporary cluster's nodes",
    )
    s.add_argument("--vm-priority", choices=("dedicated", "lowpriority"), default="dedicated")
    s.add_argument(
        "--max-nodes",
        type=int,
        default=1,
        metavar="N",
        help="with --target amlcompute: the temporary cluster's max nodes (default 1)",
    )


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


def _ssh_options(p: argparse.ArgumentParser, *, address: bool) -> None:
    """SSH login options. Secrets come from a file, an environment variable or stdin, never
    from the command line."""
    if address:
        p.add_argument("--address", required=True, help="host name or IP address")
    p.add_argument("--ssh-port", type=int, default=22)
    p.add_argument("--username", help="the remote user (no root needed)")
    p.add_argument("--private-key-file", type=Path, metavar="PATH")
    p.add_argument("--passphrase-env", metavar="VAR", help="the key's passphrase is in $VAR")
    p.add_argument("--passphrase-stdin", action="store_true", help="read the passphrase")
    p.add_argument("--password-env", metavar="VAR", help="the password is in $VAR")
    p.add_argument("--password-stdin", action="store_true", help="read the password")
    p.add_argument(
        "--known-hosts",
        type=Path,
        metavar="FILE",
        help="verify host keys against FILE (default: ~/.ssh/known_hosts)",
    )
    p.add_argument(
        "--trust-new-host-key",
        action="store_true",
        help="accept and record the key of a host not yet in known_hosts",
    )


def _ssh_login(args: argparse.Namespace) -> tuple[m.SshLogin, m.SshSecret]:
    """The login settings and the secret, from files, environment variables or stdin."""
    if not args.username:
        raise UsageError("--username is required")
    key_file: Path | None = args.private_key_file
    if key_file is not None and (args.password_env or args.password_stdin):
        raise UsageError("give either --private-key-file or a password, not both")
    if key_file is None and not (args.password_env or args.password_stdin):
        raise UsageError(
            "credentials are required: --private-key-file PATH, or --password-env VAR / "
            "--password-stdin (secrets are never taken from the command line)"
        )
    secret: m.SshSecret
    auth: Literal["key", "password"]
    if key_file is not None:
        secret, auth = _ssh_key_secret(args, key_file), "key"
    else:
        password = (
            _secret_from_env(args.password_env, "password")
            if args.password_env
            else _secret_from_stdin("password")
        )
        secret, auth = m.SshSecret(password=password), "password"
    known = str(args.known_hosts.expanduser().resolve()) if args.known_hosts else None
    login = m.SshLogin(
        username=args.username,
        ssh_port=args.ssh_port,
        auth=auth,
        known_hosts=known,
        trust_new_host_key=args.trust_new_host_key,
    )
    return login, secret


def _ssh_key_secret(args: argparse.Namespace, key_file: Path) -> m.SshSecret:
    """The private key's text, and its passphrase when one is given (from $VAR or stdin)."""
    try:
        key_text = key_file.expanduser().read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the private key file {key_file}: {exc}") from None
    passphrase = None
    if args.passphrase_env:
        passphrase = _secret_from_env(args.passphrase_env, "passphrase")
    elif args.passphrase_stdin:
        passphrase = _secret_from_stdin("passphrase")
    return m.SshSecret(private_key=key_text, passphrase=passphrase)


def _secret_from_env(var: str, what: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise UsageError(f"the {what} was to be in ${var}, but it is not set")
    return value


def _secret_from_stdin(what: str) -> str:
    """Prompt without echo on a terminal; otherwise read one line (scripts pipe it in)."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{what}: ")
    line = sys.stdin.readline().rstrip("\n")
    if not line:
        raise UsageError(f"no {what} on standard input")
    return line


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, script_args = args_list[:cut], args_list[cut + 1 :]
    try:
        args = _parser().parse_args(args_list)
    except ArgvError as exc:
        return refuse_argv(exc, args_list)
    configure(args.log_level)
    try:
        return _dispatch(_with_job_file(args, args_list), script_args)
    except ArgvError as exc:  # the second parse, with a job file's settings as defaults
        return refuse_argv(exc, args_list)
    except _REFUSED as exc:
        print_error(_error_code(exc), str(exc), getattr(args, "output", "text"))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


_REFUSED = (
    WebError,
    UsageError,
    JobFileError,
    ClientError,
    SnapshotError,
    envspec.EnvSpecError,
    RunConfigError,
    SweepConfigError,
    BrokerUnreachable,
    NotInitialised,
    AccessDenied,
    AuthError,
    MetricsPortError,
)
# The `code` of an error in json/yaml mode, by the error's type (the first that matches).
_ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (BrokerUnreachable, "unreachable"),
    (NoScheduler, "unreachable"),
    (AccessDenied, "access_denied"),
    (NotInitialised, "not_initialised"),
    (NotFound, "not_found"),
    (ClientError, "refused"),
)


def _error_code(exc: Exception) -> str:
    if isinstance(exc, RequestRefused):
        return exc.code
    return next((code for kind, code in _ERROR_CODES if isinstance(exc, kind)), "bad_input")


def _with_job_file(args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """`sortie run submit -f JOB.yml`: the command line parsed again with the file's
    settings as the defaults, so that the flags given override them. A Python environment
    or memory flag replaces the file's whole choice of it."""
    submits = getattr(args, "run_command", None) or getattr(args, "sweep_command", None)
    if submits != "submit" or args.job_file is None:
        return args
    job = load(args.job_file)
    if args.command == "run" and job.sweep is not None:
        raise UsageError(
            f"{args.job_file} has a sweep: section: submit it with `sortie sweep submit -f "
            f"{args.job_file}` (or remove the section to submit one run)"
        )
    defaults = flag_defaults(job, args.job_file.parent)
    for group in (PYTHON_FLAGS, MEMORY_FLAGS):
        if any(getattr(args, dest) is not None for dest in group):
            for dest in group:
                defaults.pop(dest)
    if args.source_dir is not None:
        defaults.pop("source_dir")
    return _parser(defaults).parse_args(argv)


def _dispatch(args: argparse.Namespace, script_args: list[str]) -> int:
    if args.command == "up":
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
            bounds=Bounds(
                retention=retention_of(args), limits=limits_of(args), blob_gc=blob_gc_of(args)
            ),
        )
    if args.command == "status":
        from sortie.cli.status import show_status

        return _with_client(args, lambda c: show_status(c, output=args.output))
    plain: dict[str, Callable[[argparse.Namespace], int]] = {
        "auth": run_auth,
        "scheduler": _daemon_scheduler,
        "workspace": run_workspace,
        "web": run_web,
        "gc": lambda a: asyncio.run(run_gc(a)),
    }
    if args.command in plain:  # commands that take their arguments alone
        return plain[args.command](args)
    if args.command == "agent":
        if args.agent_command is None:
            if not args.target:
                raise UsageError(
                    "`sortie agent` needs --target NAME to run an agent, or an action: "
                    "list, drain, cordon, uncordon, preempt"
                )
            return _daemon_agent(args)
        return _with_client(args, lambda c: _agent_admin(c, args))
    clients: dict[str, Callable[[Client], Awaitable[int]]] = {
        "compute": lambda c: _compute(c, args),
        "model": lambda c: run_model(c, args),
    }
    if args.command == "sweep":  # its input is checked before connecting
        clients["sweep"] = sweep_action(args, script_args, _run_config_of)
    if args.command in clients:
        return _with_client(args, clients[args.command])
    handler = _submit if args.run_command == "submit" else RUN_HANDLERS[args.run_command]
    if args.run_command != "submit" and script_args:
        raise UsageError("`--` is only for `sortie run submit` (arguments for the script)")
    return _with_client(args, lambda c: handler(c, args, script_args))


def _with_client(args: argparse.Namespace, fn: Callable[[Client], Awaitable[int]]) -> int:
    async def go() -> int:
        client = await Client.connect(args.url, creds=args.creds, tls_ca=args.tls_ca)
        try:
            return await fn(client)
        finally:
            await client.close()

    return asyncio.run(go())


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


def _daemon_scheduler(args: argparse.Namespace) -> int:
    from sortie.bus.profile import resolve_url
    from sortie.embedded import _run
    from sortie.scheduler.daemon import SchedulerConfig, run_scheduler

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
    )
    _run(_until_signal(lambda stop: run_scheduler(config, stop)))
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
        labels=_env_vars(args.label, flag="--label"),
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
    )
    from sortie.agents.executors.sandbox import IsolationError
    from sortie.agents.gpus import GpuConfigError

    try:
        _run(_until_signal(lambda stop: run_agent(config, stop)))
    except (GpuConfigError, IsolationError) as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


async def _until_signal(start: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await start(stop)


# --- run commands ------------------------------------------------------------------------------


def _script_run_config(args: argparse.Namespace, script_args: list[str]) -> ScriptRunConfig:
    """`sortie run submit`'s flags as the SDK's configuration, so that both reach the
    scheduler through the one conversion (``runconfig.run_spec``)."""
    if not args.docker_image and (args.docker_shm_size or args.docker_arg or args.docker_gpus):
        raise UsageError("--docker-shm-size, --docker-arg and --docker-gpus need --docker-image")
    if args.vm_size and args.target != "amlcompute":
        raise UsageError(
            "--vm-size makes a temporary cluster for the run: use it with --target amlcompute"
        )
    docker = DockerSettings(
        enabled=bool(args.docker_image),
        base_image=args.docker_image or None,
        gpu_support=args.docker_gpus,
        shm_size=args.docker_shm_size,
        arguments=list(args.docker_arg),
    )
    run_config = RunConfiguration(
        target=args.target,
        environment=EnvironmentSection(python=_python_section(args), docker=docker),
        environment_variables=_env_vars(args.env),
        secret_environment_variables=_secret_env(args.secret_env),
        max_run_duration_seconds=args.max_duration,
        priority=args.priority,
        cpus=args.cpus,
        memory_mb=int(args.memory * 1024) if args.memory is not None else args.memory_mb or 0,
        gpus=args.gpus,
        gpu_type=args.gpu_type,
        node_count=args.node_count,
        max_retries=args.max_retries,
        constraints=_env_vars(args.constraint, flag="--constraint"),
        dedicated_only=args.dedicated_only,
        strategy="spread" if args.spread else "binpack",
        queue_timeout_seconds=args.queue_timeout,
        amlcompute=AmlComputeSection(
            vm_size=args.vm_size,
            vm_priority=args.vm_priority,
            _cluster_max_node_count=args.max_nodes,
        ),
    )
    return ScriptRunConfig(
        source_directory=args.source_dir,
        script=args.script,
        arguments=[*args.args, *script_args],
        run_config=run_config,
    )


def _python_section(args: argparse.Namespace) -> PythonSection:
    """--pip, --requirements, --conda-file (Sortie builds it) or --python (used as is)."""
    if args.pip:
        return PythonSection(user_managed_dependencies=False, pip_packages=list(args.pip))
    if args.requirements:
        return PythonSection(
            user_managed_dependencies=False, requirements_file=str(args.requirements)
        )
    if args.conda_file:
        return PythonSection(
            user_managed_dependencies=False, conda_dependencies_file=str(args.conda_file)
        )
    return PythonSection(interpreter_path=args.python)


def _agent_env(pairs: list[str]) -> dict[str, str]:
    env = _env_vars(pairs, "--agent-env")
    if (why := agent_env.problem(env)) is not None:
        raise UsageError(why)
    return env


def _env_vars(pairs: list[str], flag: str = "--env") -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _secret_env(names: list[str]) -> dict[str, str]:
    """``--secret-env NAME``: the value of $NAME in the submitter's own environment."""
    out: dict[str, str] = {}
    for name in names:
        if "=" in name:
            raise UsageError(
                f"--secret-env takes a variable NAME, not NAME=VALUE ({name.partition('=')[0]}"
                "=...): set the variable in your environment and pass its name; secret "
                "values are never taken from the command line"
            )
        value = os.environ.get(name)
        if value is None:
            raise UsageError(
                f"--secret-env {name}: ${name} is not set in your environment; set it (e.g. "
                f"read -s {name} && export {name}) and submit again"
            )
        out[name] = value
    return out


def _run_config_of(args: argparse.Namespace, script_args: list[str]) -> ScriptRunConfig:
    """The submit flags as the SDK's configuration, the source directory checked first."""
    source = args.source_dir
    if source is None or not args.script:
        raise UsageError(
            "give SOURCE_DIR and --script (or `script:` in a job file: -f JOB.yml)"
            if source is None
            else "--script is required: the script's path inside SOURCE_DIR (or `script:` "
            "in a job file)"
        )
    if not source.exists():
        raise UsageError(f"source directory {source} does not exist")
    if not source.is_dir():
        raise UsageError(f"{source} is not a directory: give the folder that holds your script")
    return _script_run_config(args, script_args)


async def _submit(client: Client, args: argparse.Namespace, script_args: list[str]) -> int:
    config = _run_config_of(args, script_args)
    limit_mb = args.snapshot_limit_mb
    from sortie.cli.progress import SubmitProgress, interactive

    with SubmitProgress(enabled=interactive(args.output)) as bars:
        sub = await client.submit(
            config,
            experiment=args.experiment,
            submission_id=args.submission_id,
            tags=_env_vars(args.tag, flag="--tag") or None,
            snapshot_limit_bytes=int(limit_mb * 1024 * 1024) if limit_mb else None,
            progress=bars.uploading,
            hash_progress=bars.hashing,
        )
    for w in sub.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.output != "text":
        emit(SubmittedView(run_id=sub.run_id, snapshot=sub.snapshot), args.output, indent=False)
    else:
        s = sub.snapshot
        target = args.target
        if target == "amlcompute":  # run-based creation: name the cluster made for the run
            target = f"{(await client.get_run(sub.run_id)).spec.target} (made for this run)"
        print(
            f"Submitted {sub.run_id} to {target} "
            f"(snapshot {s.files} files, {_size(s.bytes)}; uploaded {s.uploaded_files} files, "
            f"{_size(s.uploaded_bytes)})",
            file=sys.stderr,
            flush=True,
        )
    if not args.wait:
        return EXIT_OK
    return await _stream_and_wait(client, sub.run_id, fmt=args.output)


async def _stream_and_wait(client: Client, run_id: str, *, fmt: str = "text") -> int:
    quiet = fmt != "text"
    from sortie.cli.progress import interactive, run_state_line

    ranked = (await client.get_run(run_id)).spec.node_count > 1
    # on a terminal, a live line under the output says where the run is (Queued, Preparing...)
    async with run_state_line(client, run_id, enabled=not quiet and interactive()):
        async for rank, line in client.logs(run_id, follow=True):
            if not quiet:
                echo_line(line, rank if ranked else None)
        rec = await client.wait(run_id)
    print_outcome(rec, fmt)
    return EXIT_OK if rec.state == "Completed" else EXIT_RUN_FAILED


# --- compute targets and agents ---------------------------------------------------------------


def _compute_create(args: argparse.Namespace) -> m.ComputeCreate:
    """The create request: a cluster of the variant ``--provider`` names."""
    common = {
        "vm_size": args.vm_size,
        "max_nodes": args.max_nodes,
        "min_nodes": args.min_nodes,
        "idle_seconds_before_scaledown": args.idle_seconds_before_scaledown,
        "vm_priority": args.vm_priority,
    }
    hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
    if args.provider == "ssh":
        login, secret = _ssh_login(args)
        pool = m.SshPoolCluster(**common, hosts=hosts, ssh=login)
        return m.ComputeCreate(name=args.name, cluster=pool, secret=secret)
    if hosts:
        raise UsageError("--hosts is for --provider ssh")
    if args.provider != "process":
        raise UsageError(f"unknown node provider {args.provider!r}; known providers: process, ssh")
    return m.ComputeCreate(name=args.name, cluster=m.ProcessCluster(**common))


async def _compute(client: Client, args: argparse.Namespace) -> int:
    cmd = args.compute_command
    reply = await client.compute(_compute_request(args))
    if cmd == "attach" and not args.no_wait and isinstance(reply, m.VmReply):
        reply = m.VmReply(vm=await _follow_attach(client, reply.vm, quiet=args.output != "text"))
    if cmd == "detach" and isinstance(reply, m.VmReply):
        return await _follow_detach(client, reply.vm, output=args.output)
    if isinstance(reply, m.VmReply):
        if args.output != "text":
            emit(machine_view(reply.vm), args.output)
        else:
            _print_vm(reply.vm)
        if cmd == "attach" and reply.vm.provisioning_state == "Failed":
            return EXIT_RUN_FAILED
        return EXIT_OK
    if args.output != "text":
        _print_compute_data(reply, args.output)
    else:
        _print_compute_text(reply)
    return EXIT_OK


def _compute_request(args: argparse.Namespace) -> m.Message:
    """The request a `sortie compute SUBCOMMAND` sends."""
    match args.compute_command:
        case "create":
            return _compute_create(args)
        case "attach":
            login, secret = _ssh_login(args)
            return m.ComputeAttach(
                name=args.name,
                vm=m.VmConfig(
                    address=args.address,
                    ssh=login,
                    advertised_url=args.advertised_url,
                    agent_env=_agent_env(args.agent_env),
                ),
                secret=secret,
            )
        case "detach":
            return m.ComputeDetach(name=args.name, keep_files=args.keep_files, force=args.force)
        case "update":
            return m.ComputeUpdate(
                name=args.name,
                min_nodes=args.min_nodes,
                max_nodes=args.max_nodes,
                idle_seconds_before_scaledown=args.idle_seconds_before_scaledown,
            )
        case "delete":
            return m.ComputeDelete(name=args.name, force=args.force)
        case "show":
            return m.ComputeShow(name=args.name)
        case "list":
            return m.ComputeList()
        case _:
            return m.SizesList()


def _print_compute_data(
    reply: m.ComputeReply | m.ComputeListReply | m.SizesReply, fmt: str
) -> None:
    if isinstance(reply, m.ComputeReply):
        emit(compute_view(reply.info), fmt)
    elif isinstance(reply, m.ComputeListReply):
        listed: list[ComputeView | MachineView] = [compute_view(i) for i in reply.computes]
        listed += [machine_view(v) for v in reply.vms]
        emit(listed, fmt)
    else:
        emit(reply.sizes, fmt)


def _print_compute_text(reply: m.ComputeReply | m.ComputeListReply | m.SizesReply) -> None:
    if isinstance(reply, m.SizesReply):
        rows: list[tuple[str, ...]] = [("NAME", "CPUS", "MEMORY", "GPUS", "GPU TYPE")]
        rows += [
            (s.name, f"{s.cpus:g}", f"{s.memory_mb / 1024:g} GB", str(s.gpus), s.gpu_type or "")
            for s in reply.sizes
        ]
        _table(rows)
    elif isinstance(reply, m.ComputeListReply):
        rows = [("NAME", "TYPE", "SIZE", "PRIORITY", "STATE", "NODES", "MIN", "MAX")]
        rows += [
            (
                i.compute.name,
                i.compute.type,
                i.compute.cluster.vm_size,
                i.compute.cluster.vm_priority,
                i.compute.provisioning_state,
                str(i.counts.current),
                str(i.compute.cluster.min_nodes),
                str(i.compute.cluster.max_nodes),
            )
            for i in reply.computes
        ]
        rows += [
            (v.name, "vm", v.vm.address, "dedicated", v.provisioning_state, "1", "-", "-")
            for v in reply.vms
        ]
        _table(rows)
    else:
        _print_compute(reply.info)


async def _follow_attach(client: Client, vm: m.VmRecord, *, quiet: bool) -> m.VmRecord:
    """Print the attach's progress as it happens; return the record once it has settled."""
    shown = 0
    while True:
        if not quiet:
            for line in vm.progress[shown:]:
                print(f"[{vm.name}] {line}", file=sys.stderr, flush=True)
        shown = len(vm.progress)
        if vm.provisioning_state != "Creating":
            return vm
        await asyncio.sleep(0.5)
        reply = await client.compute(m.ComputeShow(name=vm.name))
        vm = reply.vm
        shown = min(shown, len(vm.progress))


async def _follow_detach(client: Client, vm: m.VmRecord, *, output: str) -> int:
    """Print the detach's progress until the machine is gone (its agent stopped, its files
    removed): 0; or until it could not be cleaned up (Failed, saying what is left): 1."""
    shown = len(vm.progress)
    while vm.provisioning_state == "Deleting":
        await asyncio.sleep(0.3)
        try:
            reply = await client.compute(m.ComputeShow(name=vm.name))
        except RequestRefused as exc:
            if exc.code != "not_found":
                raise
            if output != "text":
                emit({"name": vm.name, "type": "vm", "provisioning_state": "Detached"}, output)
            else:
                print(f"Detached {vm.name}: its agent is stopped and its files are removed")
            return EXIT_OK
        vm = reply.vm
        if output == "text":
            for line in vm.progress[min(shown, len(vm.progress)) :]:
                print(f"[{vm.name}] {line}", file=sys.stderr, flush=True)
        shown = len(vm.progress)
    if output != "text":
        emit(machine_view(vm), output)
    else:
        _print_vm(vm)
    if vm.provisioning_state == "Failed" and vm.provisioning_errors:
        print_error("detach_incomplete", vm.provisioning_errors[-1].message, output)
    return EXIT_RUN_FAILED


def _print_vm(vm: m.VmRecord) -> None:
    rows = [
        ("name", vm.name),
        ("type", "vm"),
        (
            "address",
            f"{vm.vm.ssh.username}@{vm.vm.address}:{vm.vm.ssh.ssh_port} ({vm.vm.ssh.auth})",
        ),
        ("provisioning", vm.provisioning_state),
        ("link", vm.link),
    ]
    rows += [("agent_env", f"{k}={v}") for k, v in redacted(vm.vm.agent_env).items()]
    rows += [("error", f"{iso(e.at)} {e.code}: {e.message}") for e in vm.provisioning_errors[-3:]]
    rows += [("progress", line) for line in vm.progress[-5:]]
    _table(rows)


def _print_compute(info: m.ComputeInfo) -> None:
    c, n = info.compute, info.counts
    rows = [
        ("name", c.name),
        ("type", c.type),
        (
            "vm_size",
            f"{c.cluster.vm_size} ({c.shape.cpus:g} CPUs, {c.shape.memory_mb} MB, "
            f"{c.shape.gpus} GPUs{' ' + c.shape.gpu_type if c.shape.gpu_type else ''})",
        ),
        ("vm_priority", c.cluster.vm_priority),
        (
            "nodes",
            f"min {c.cluster.min_nodes}, max {c.cluster.max_nodes}, idle scale-down after "
            f"{c.cluster.idle_seconds_before_scaledown:g}s",
        ),
        ("provisioning", c.provisioning_state),
        (
            "counts",
            f"current {n.current}, target {n.target}, idle {n.idle}, busy {n.busy}, "
            f"preempted {n.preempted}",
        ),
    ]
    rows += [("node", f"{x.node_id} {x.state}") for x in info.nodes]
    rows += [("error", f"{iso(e.at)} {e.code}: {e.message}") for e in c.provisioning_errors[-5:]]
    rows += [("decision", f"{iso(d.at)} {d.action}: {d.reason}") for d in c.decisions[-5:]]
    _table(rows)


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
        flags = ",".join(f for f, on in (("cordoned", a.cordoned), ("draining", a.draining)) if on)
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


if __name__ == "__main__":
    sys.exit(main())
