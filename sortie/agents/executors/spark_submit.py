"""What the Spark executor decides, as plain data (pure): spark-submit's command line and the
variables it adds, where an application's id shows itself, and how big the cluster's largest
worker is (the master's ``/json``).

A run is one client-mode application: the driver (the run's script) runs on the head node, in
the agent's process group, so its output and the metrics pipe work as for a process run; the
executors run on the workers with the same interpreter (``PYSPARK_PYTHON``), the run's snapshot
shipped to them as ``--py-files``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePath

from sortie.proto.engines import SparkEngine

# an application's id: a standalone master's (Master.newApplicationId:
# app-yyyyMMddHHmmss-NNNN) or YARN's (application_CLUSTERSTART_NNNN)
APP_ID = re.compile(r"\b(app-[0-9]{14}-[0-9]{4,}|application_[0-9]{10,}_[0-9]{4,})\b")
MASTER_HOST = re.compile(r"^spark://([A-Za-z0-9_.-]+):[0-9]{1,5}$")


def submit_argv(
    engine: SparkEngine,
    *,
    run_id: str,
    py_files: PurePath,
    script: PurePath,
    arguments: list[str],
    driver_ui_port: int | None = None,
) -> list[str]:
    """spark-submit's argv for one run: the engine's settings, then the script and the run's
    arguments (after the script, so spark-submit passes them on untouched). With
    ``driver_ui_port`` the driver's UI listens there (unless the engine's conf says where),
    so the agent can ask it the application's id."""
    conf = dict(engine.conf)
    if driver_ui_port is not None:
        conf.setdefault("spark.ui.port", str(driver_ui_port))
    argv = [engine.submit, "--master", engine.master, "--deploy-mode", "client"]
    argv += ["--name", run_id]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    return [*argv, "--py-files", str(py_files), str(script), *arguments]


def driver_ui_port(engine: SparkEngine, free: int) -> int | None:
    """Where the driver's UI will listen, for the agent to ask it the application's id: the
    engine's ``spark.ui.port``, else ``free`` (a free port the agent picked, which
    :func:`submit_argv` passes on); None when the engine turns the UI off."""
    if engine.conf.get("spark.ui.enabled", "true").strip().lower() == "false":
        return None
    port = engine.conf.get("spark.ui.port")
    if port is None:
        return free
    return int(port) if port.isdigit() and 0 < int(port) < 65536 else None


def script_of(argv: list[str]) -> tuple[PurePath, list[str]] | None:
    """The script and its arguments from a run's launch argv (``PYTHON SCRIPT ARGS``, see
    ``agents.attempt.script_argv``); None when it is not a Python script's."""
    if len(argv) < 2 or PurePath(argv[1]).suffix != ".py":
        return None
    return PurePath(argv[1]), argv[2:]


def not_python(script: str) -> str | None:
    """Why ``script`` cannot be a Spark application, or None."""
    if PurePath(script).suffix == ".py":
        return None
    return (
        f"script {script!r} is not a Python file: a Spark run's script is a PySpark "
        "application (.py) that spark-submit starts; wrap other programs in one"
    )


def submit_env(python: str) -> dict[str, str]:
    """The variables added to the run's: the driver and the executors use the interpreter
    Sortie prepared (its environment's packages)."""
    return {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}


def app_id_in(line: str) -> str | None:
    """The application id a driver's log line names (e.g. "Connected to Spark cluster with
    app ID app-20261204023000-0001"), or None."""
    found = APP_ID.search(line)
    return found.group(0) if found else None


def app_id_of_driver(applications: object) -> str | None:
    """The application id from the driver UI's ``/api/v1/applications`` answer, or None."""
    if not isinstance(applications, list):
        return None
    for app in applications:
        if isinstance(app, Mapping):
            found = app_id_in(str(app.get("id", "")))
            if found is not None:
                return found
    return None


def driver_apps_url(port: int) -> str:
    """Where the client-mode driver (on this host) lists its application."""
    return f"http://127.0.0.1:{port}/api/v1/applications"


def master_json_url(engine: SparkEngine) -> str | None:
    """The standalone master's ``/json`` (workers, applications); None for other masters
    (YARN, local)."""
    found = MASTER_HOST.match(engine.master)
    if found is None:
        return None
    return f"http://{found.group(1)}:{engine.ui_port}/json"


def largest_worker(state: object) -> tuple[float, int] | None:
    """The cores and memory (MB) of the largest ALIVE worker in the master's ``/json``, or
    None when it lists none: no run can be bigger than one worker's executor would be."""
    if not isinstance(state, Mapping):
        return None
    best: tuple[float, int] | None = None
    for worker in state.get("workers") or []:
        if not isinstance(worker, Mapping) or worker.get("state") != "ALIVE":
            continue
        cores, memory = worker.get("cores"), worker.get("memory")
        if not isinstance(cores, int | float) or not isinstance(memory, int | float):
            continue
        size = (float(cores), int(memory))
        if best is None or size > best:
            best = size
    return best
