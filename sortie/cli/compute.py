"""`sortie compute ...`: managed clusters and machines attached over SSH."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Literal

from sortie.cli.common import UsageError, env_vars
from sortie.cli.output import EXIT_OK, EXIT_RUN_FAILED, add_output, emit
from sortie.cli.output import error as print_error
from sortie.cli.output import table as _table
from sortie.client.client import Client, RequestRefused
from sortie.client.views import ComputeView, MachineView, compute_view, iso, machine_view
from sortie.proto import agent_env
from sortie.proto import messages as m
from sortie.proto.agent_env import redacted
from sortie.proto.engines import Engine, EngineKind, SlurmEngine, SparkEngine, engine_of, kind_of

_Commands = argparse._SubParsersAction


def add_compute(sub: _Commands[argparse.ArgumentParser]) -> None:
    """`sortie compute ...`: managed clusters and attached machines."""
    comp = sub.add_parser("compute").add_subparsers(
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
    ca = comp.add_parser(
        "attach",
        help="attach a machine over SSH as a compute target: one that runs its runs itself, "
        "or the login node of a Slurm cluster / head node of a Spark cluster",
    )
    ca.add_argument("name")
    ca.add_argument(
        "--type",
        choices=("machine", "vm", "slurm", "spark"),
        default="machine",
        help="machine (default; vm is the same): it runs the runs itself; slurm: --address is "
        "a login node, runs go to Slurm (sbatch); spark: --address is a head node, runs go to "
        "spark-submit",
    )
    _ssh_options(ca, address=True)
    slurm = ca.add_argument_group("--type slurm (Slurm's default when not given)")
    slurm.add_argument("--partition", help="the partition every run is submitted to")
    slurm.add_argument("--account", help="the account runs are charged to")
    slurm.add_argument("--qos", help="the quality of service runs ask for")
    spark = ca.add_argument_group("--type spark")
    spark.add_argument(
        "--master",
        help="where spark-submit sends runs: spark://HOST:PORT, yarn (default), local[N]",
    )
    spark.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting for every run (spark.executor.memory=4g); repeatable",
    )
    spark.add_argument(
        "--submit",
        metavar="PATH",
        help="spark-submit on the head node (default: spark-submit on the agent's PATH)",
    )
    spark.add_argument(
        "--ui-port",
        type=int,
        metavar="PORT",
        help="the standalone master's web UI port, read for the workers' size (default 8080)",
    )
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


def _agent_env(pairs: list[str]) -> dict[str, str]:
    env = env_vars(pairs, "--agent-env")
    if (why := agent_env.problem(env)) is not None:
        raise UsageError(why)
    return env


_ENGINE_FLAGS: dict[str, tuple[str, ...]] = {
    "slurm": ("partition", "account", "qos"),
    "spark": ("master", "conf", "submit", "ui_port"),
}


def attach_engine(args: argparse.Namespace) -> Engine | None:
    """The engine ``--type`` names, from its own flags; a UsageError for another type's flag
    or a value the engine would not take."""
    kind: EngineKind | None = args.type if args.type in _ENGINE_FLAGS else None
    for other, flags in _ENGINE_FLAGS.items():
        if other == kind:
            continue
        for flag in flags:
            if getattr(args, flag):
                dashed = "--" + flag.replace("_", "-")
                raise UsageError(
                    f"{dashed} is for --type {other}; this attach is --type {args.type}"
                    + ("" if kind else f": add --type {other} to attach a {other} cluster")
                )
    if kind is None:
        return None
    try:
        return engine_of(
            kind,
            partition=args.partition,
            account=args.account,
            qos=args.qos,
            master=args.master,
            conf=args.conf,
            submit=args.submit,
            ui_port=args.ui_port,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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


async def run_compute(client: Client, args: argparse.Namespace) -> int:
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
            attach_engine(args)  # a wrong flag is refused before any secret is read
            login, secret = _ssh_login(args)
            return m.ComputeAttach(
                name=args.name,
                vm=m.VmConfig(
                    address=args.address,
                    ssh=login,
                    advertised_url=args.advertised_url,
                    agent_env=_agent_env(args.agent_env),
                    engine=attach_engine(args),
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
            (
                v.name,
                machine_type(v.vm),
                v.vm.address,
                "dedicated",
                v.provisioning_state,
                "1",
                "-",
                "-",
            )
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
        ("type", machine_type(vm.vm)),
        (
            "address",
            f"{vm.vm.ssh.username}@{vm.vm.address}:{vm.vm.ssh.ssh_port} ({vm.vm.ssh.auth})",
        ),
        ("provisioning", vm.provisioning_state),
        ("link", vm.link),
    ]
    rows += [("engine", line) for line in engine_lines(vm.vm.engine)]
    rows += [("agent_env", f"{k}={v}") for k, v in redacted(vm.vm.agent_env).items()]
    rows += [("error", f"{iso(e.at)} {e.code}: {e.message}") for e in vm.provisioning_errors[-3:]]
    rows += [("progress", line) for line in vm.progress[-5:]]
    _table(rows)


def machine_type(vm: m.VmConfig) -> str:
    """An attached machine's type as listed: vm, or the engine it hands runs to."""
    return "vm" if vm.engine is None else kind_of(vm.engine)


def engine_lines(engine: Engine | None) -> list[str]:
    """An engine's settings, one per line (Slurm's defaults said as such)."""
    match engine:
        case SlurmEngine():
            return [
                f"slurm: partition {engine.partition or '(default)'}, account "
                f"{engine.account or '(default)'}, qos {engine.qos or '(default)'}"
            ]
        case SparkEngine():
            return [
                f"spark: master {engine.master}",
                f"spark: submit {engine.submit}",
                f"spark: ui port {engine.ui_port}",
            ] + [f"spark: --conf {k}={v}" for k, v in sorted(engine.conf.items())]
    return []


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
