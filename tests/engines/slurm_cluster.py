"""A real one-node Slurm cluster on 127.0.0.1 for the engine tests: munged, slurmctld and
slurmd started from a temporary directory with their own config, ports and key.

Debian's slurm-wlm and munge come from tests/setup-system.sh (test.sh runs it). Nothing here
is mocked or skipped: without them (or without root, which slurmd needs to start jobs as the
submitting user) :func:`start_slurm` fails and says what to run. Accounting is off (no
slurmdbd), so ``sacct`` answers nothing here: a job's state and exit code are read from
``squeue``/``scontrol``, which keep ended jobs for ``MinJobAge`` seconds.

The node is in two partitions: ``debug`` (the default, where the tests send Sortie's runs) and
``high``, of a higher ``PriorityTier``: a job there preempts debug's jobs that hold what it
needs (``preempt/partition_prio``, ``PreemptMode=CANCEL``: the job ends PREEMPTED, and Sortie,
not Slurm, requeues its run as a new attempt).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sortie.bus.broker import free_port

SETUP_HINT = "run `sudo tests/setup-system.sh` (test.sh runs it) to install slurm-wlm and munge"
PARTITION = "debug"
# the same node in a partition of a higher PriorityTier: a job there preempts the debug
# partition's jobs (cancelled, ending PREEMPTED: Sortie, not Slurm, requeues a run)
HIGH_PARTITION = "high"
START_LIMIT_S = 60.0


class SlurmStartError(RuntimeError):
    """The cluster did not come up; the message holds its daemons' last log lines."""


@dataclass(frozen=True)
class SlurmCluster:
    """Where the cluster's files are and how a client reaches it (``SLURM_CONF``)."""

    root: Path
    conf: Path
    node: str
    partition: str
    high_partition: str
    cpus: int
    memory_mb: int

    @property
    def env(self) -> dict[str, str]:
        """What a client command (sbatch, squeue, scancel) needs in its environment."""
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *argv: str, user: str | None = None, timeout: float = 30) -> str:
        """Run a Slurm client command (as ``user`` when given) and return its stdout."""
        env = {**os.environ, **self.env}
        full = list(argv)
        if user is not None:
            full = ["runuser", "-u", user, "--", "env", f"SLURM_CONF={self.conf}", *argv]
        done = subprocess.run(full, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def node_state(self) -> str:
        # (the one node is listed once per partition: asked of the default one)
        return self.command("sinfo", "-h", "-N", "-p", self.partition, "-o", "%T").strip()


def _missing() -> list[str]:
    return [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(tool)]


def _node_figures() -> tuple[int, int]:
    """CPUs and memory (MB) as slurmd sees this host, so the node is never drained for
    claiming more than it has."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(
        part.split("=", 1) for part in out.split() if "=" in part and not part.startswith("#")
    )
    cpus = int(fields.get("CPUs", os.cpu_count() or 1))
    memory = int(fields.get("RealMemory", 1024))
    return cpus, max(256, memory - 512)


def _config(root: Path, node: str, cpus: int, memory: int) -> str:
    ctld_port = free_port()
    slurmd_port = free_port()
    return f"""\
ClusterName=sortietest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/slurmd-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
ReturnToService=2
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName={HIGH_PARTITION} Nodes={node} MaxTime=INFINITE State=UP PriorityTier=10
"""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_slurm() -> SlurmCluster:
    """Start munged, slurmctld and slurmd; return once the node takes jobs."""
    missing = _missing()
    if missing:
        raise SlurmStartError(f"{', '.join(missing)} not found: {SETUP_HINT}")
    if os.geteuid() != 0:
        raise SlurmStartError("the Slurm tests start slurmd, which needs root")
    # every user's jobs pass through these directories: 0755 all the way down
    root = Path(tempfile.mkdtemp(prefix="sortie-slurm-"))
    root.chmod(0o755)
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(mode=0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    subprocess.run(
        [
            "munged",
            f"--key-file={key}",
            f"--socket={root}/munge/munge.socket",
            f"--pid-file={root}/munge/munged.pid",
            f"--log-file={root}/log/munged.log",
            f"--seed-file={root}/munge/seed",
            "--force",
        ],
        check=True,
        timeout=30,
    )
    node = socket.gethostname().split(".")[0]
    cpus, memory = _node_figures()
    conf = root / "slurm.conf"
    conf.write_text(_config(root, node, cpus, memory))
    conf.chmod(0o644)
    cluster = SlurmCluster(
        root=root,
        conf=conf,
        node=node,
        partition=PARTITION,
        high_partition=HIGH_PARTITION,
        cpus=cpus,
        memory_mb=memory,
    )
    try:
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, timeout=30)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, timeout=30)
        deadline = time.monotonic() + START_LIMIT_S
        state = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                state = cluster.node_state()
                if state in ("idle", "mixed", "allocated"):
                    return cluster
            time.sleep(0.5)
        raise SlurmStartError(
            f"the Slurm node is {state or 'not answering'} after {START_LIMIT_S:.0f} s\n"
            f"slurmctld.log:\n{_tail(root / 'log' / 'slurmctld.log')}\n"
            f"slurmd.log:\n{_tail(root / 'log' / 'slurmd.log')}"
        )
    except BaseException:
        stop_slurm(cluster)
        raise


def _kill(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop_slurm(cluster: SlurmCluster) -> None:
    """Stop the daemons (jobs first: slurmd's steps die with it) and remove the directory."""
    for partition in (cluster.partition, cluster.high_partition):
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, OSError):
            cluster.command("scancel", "--partition", partition, timeout=10)
    root = cluster.root
    _kill(root / "slurmd.pid")
    _kill(root / "slurmctld.pid")
    _kill(root / "munge" / "munged.pid")
    shutil.rmtree(root, ignore_errors=True)
