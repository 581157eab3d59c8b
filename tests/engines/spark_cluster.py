"""A real Spark standalone cluster on 127.0.0.1 for the engine tests: a master and one
worker, both the JVM processes of the ``pyspark`` package the test extra locks (it ships
``spark-submit`` and the jars), on the Java runtime tests/setup-system.sh installs.

Nothing is mocked or skipped: without Java or pyspark :func:`start_spark` fails and says what
to run. Logs and work directories live in a temporary directory removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sortie.bus.broker import free_port

SETUP_HINT = (
    "run `./setup.sh --test` (pyspark) and `sudo tests/setup-system.sh` (Java); test.sh runs both"
)
START_LIMIT_S = 120.0
WORKER_CORES = 1
WORKER_MEMORY = "1g"


class SparkStartError(RuntimeError):
    """The cluster did not come up; the message holds its logs' last lines."""


@dataclass
class SparkCluster:
    """A running master and worker; ``spark_submit`` is the launcher a head node would have."""

    root: Path
    spark_home: Path
    master_url: str  # spark://127.0.0.1:PORT
    ui_port: int  # the master's web UI (its /json answers the cluster's state)
    processes: list[subprocess.Popen[bytes]]

    @property
    def spark_submit(self) -> Path:
        return self.spark_home / "bin" / "spark-submit"

    @property
    def env(self) -> dict[str, str]:
        """What spark-submit needs: the Spark it belongs to, loopback only, this Python."""
        return {
            "SPARK_HOME": str(self.spark_home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_CONF_DIR": str(self.root / "conf"),
        }

    def state(self) -> dict[str, object]:
        """The master's view of the cluster (workers, applications) from its web UI."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


def _spark_home() -> Path:
    try:
        from pyspark.find_spark_home import _find_spark_home
    except ImportError as e:
        raise SparkStartError(f"pyspark is not installed: {SETUP_HINT}") from e
    return Path(_find_spark_home())


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_spark() -> SparkCluster:
    """Start a master and one worker on 127.0.0.1; return once the worker is ALIVE."""
    if not shutil.which("java"):
        raise SparkStartError(f"no java on PATH: {SETUP_HINT}")
    home = _spark_home()
    root = Path(tempfile.mkdtemp(prefix="sortie-spark-"))
    root.chmod(0o755)
    for sub in ("conf", "logs", "work", "events"):
        (root / sub).mkdir(mode=0o755)
    (root / "conf" / "log4j2.properties").write_text(
        "rootLogger.level = warn\nrootLogger.appenderRef.stderr.ref = console\n"
        "appender.console.type = Console\nappender.console.name = console\n"
        "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n\n"
    )
    port, ui_port, worker_port, worker_ui = (free_port() for _ in range(4))
    cluster = SparkCluster(
        root=root,
        spark_home=home,
        master_url=f"spark://127.0.0.1:{port}",
        ui_port=ui_port,
        processes=[],
    )
    env = {**os.environ, **cluster.env, "SPARK_LOG_DIR": str(root / "logs")}
    spark_class = str(home / "bin" / "spark-class")
    try:
        for name, argv in (
            (
                "master",
                [
                    spark_class,
                    "org.apache.spark.deploy.master.Master",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--webui-port",
                    str(ui_port),
                ],
            ),
            (
                "worker",
                [
                    spark_class,
                    "org.apache.spark.deploy.worker.Worker",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(worker_port),
                    "--webui-port",
                    str(worker_ui),
                    "--cores",
                    str(WORKER_CORES),
                    "--memory",
                    WORKER_MEMORY,
                    "--work-dir",
                    str(root / "work"),
                    cluster.master_url,
                ],
            ),
        ):
            log = (root / "logs" / f"{name}.log").open("wb")
            cluster.processes.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            for proc in cluster.processes:
                if proc.poll() is not None:
                    raise SparkStartError(f"a Spark daemon exited {proc.returncode}")
            with contextlib.suppress(OSError, ValueError):
                workers = cluster.state().get("workers", [])
                if any(w.get("state") == "ALIVE" for w in workers):  # type: ignore[union-attr]
                    return cluster
            time.sleep(0.5)
        raise SparkStartError(f"no ALIVE worker after {START_LIMIT_S:.0f} s")
    except SparkStartError as e:
        logs = "\n".join(
            f"{name}.log:\n{_tail(root / 'logs' / f'{name}.log')}" for name in ("master", "worker")
        )
        stop_spark(cluster)
        raise SparkStartError(f"{e}\n{logs}") from None
    except BaseException:
        stop_spark(cluster)
        raise


def stop_spark(cluster: SparkCluster) -> None:
    """Stop the worker and the master (their process groups) and remove the directory."""
    for proc in reversed(cluster.processes):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=15)
    shutil.rmtree(cluster.root, ignore_errors=True)
