"""The Spark executor's decisions (agents.executors.spark_submit) and the engine's checks:
table-driven cases."""

from __future__ import annotations

from pathlib import PurePath

import pytest

from sortie.agents.executors.spark_submit import (
    app_id_in,
    app_id_of_driver,
    driver_apps_url,
    driver_ui_port,
    largest_worker,
    master_json_url,
    not_python,
    script_of,
    submit_argv,
    submit_env,
)
from sortie.proto.engines import SparkEngine, problem

WORK = PurePath("/data/runs/r1/1")


@pytest.mark.parametrize(
    ("engine", "ui_port", "arguments", "expected"),
    [
        (
            SparkEngine(master="spark://head:7077"),
            None,
            [],
            (
                "spark-submit --master spark://head:7077 --deploy-mode client --name r1 "
                f"--py-files /z.zip {WORK}/train.py"
            ).split(),
        ),
        (
            SparkEngine(
                master="yarn",
                submit="/opt/spark/bin/spark-submit",
                conf={"spark.executor.memory": "2g", "spark.eventLog.enabled": "true"},
            ),
            4040,
            ["--lr", "0.1", "--name", "x"],  # the run's own arguments, after the script
            (
                "/opt/spark/bin/spark-submit --master yarn --deploy-mode client --name r1 "
                "--conf spark.executor.memory=2g --conf spark.eventLog.enabled=true "
                f"--conf spark.ui.port=4040 --py-files /z.zip {WORK}/train.py --lr 0.1 --name x"
            ).split(),
        ),
        (  # the engine's own UI port wins over the agent's pick
            SparkEngine(master="local[2]", conf={"spark.ui.port": "4999"}),
            4040,
            [],
            (
                "spark-submit --master local[2] --deploy-mode client --name r1 "
                f"--conf spark.ui.port=4999 --py-files /z.zip {WORK}/train.py"
            ).split(),
        ),
    ],
)
def test_submit_argv(
    engine: SparkEngine, ui_port: int | None, arguments: list[str], expected: list[str]
) -> None:
    argv = submit_argv(
        engine,
        run_id="r1",
        py_files=PurePath("/z.zip"),
        script=WORK / "train.py",
        arguments=arguments,
        driver_ui_port=ui_port,
    )
    assert argv == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/env/bin/python", "/w/train.py"], (PurePath("/w/train.py"), [])),
        (["/env/bin/python", "/w/t.py", "a", "b"], (PurePath("/w/t.py"), ["a", "b"])),
        (["sh", "/w/run.sh", "a"], None),
        (["/w/binary"], None),
    ],
)
def test_script_of(argv: list[str], expected: tuple[PurePath, list[str]] | None) -> None:
    assert script_of(argv) == expected


@pytest.mark.parametrize(
    ("script", "refused"),
    [("train.py", False), ("pkg/job.py", False), ("run.sh", True), ("train", True)],
)
def test_only_python_scripts_are_spark_applications(script: str, refused: bool) -> None:
    why = not_python(script)
    assert (why is not None) == refused
    if why is not None:
        assert script in why and ".py" in why


def test_submit_env_points_driver_and_executors_at_the_runs_python() -> None:
    assert submit_env("/envs/abc/bin/python") == {
        "PYSPARK_PYTHON": "/envs/abc/bin/python",
        "PYSPARK_DRIVER_PYTHON": "/envs/abc/bin/python",
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "02:31:07 INFO StandaloneSchedulerBackend: Connected to Spark cluster with app ID "
            "app-20261204023107-0003",
            "app-20261204023107-0003",
        ),
        ("Granted executor ID app-20261204023107-0012/0 on worker", "app-20261204023107-0012"),
        ("app-2026120402310-0003 (a digit short)", None),
        ("my-app-20261204023107-0003x", None),
        (
            "INFO Client: Submitted application application_1733280000000_0042",
            "application_1733280000000_0042",
        ),
        ("totals [('a', 4)]", None),
    ],
)
def test_app_id_in_a_drivers_line(line: str, expected: str | None) -> None:
    assert app_id_in(line) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ([{"id": "app-20261204023107-0003", "name": "x"}], "app-20261204023107-0003"),
        ([{"id": "local-1733280000000"}], None),  # a local master: no cluster application
        ([], None),
        ({"id": "app-20261204023107-0003"}, None),
        (None, None),
    ],
)
def test_app_id_of_the_drivers_ui(answer: object, expected: str | None) -> None:
    assert app_id_of_driver(answer) == expected


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({}, 4040),  # the agent's pick
        ({"spark.ui.port": "4999"}, 4999),
        ({"spark.ui.port": "0"}, None),  # Spark picks: nothing to ask (the output may say)
        ({"spark.ui.port": "many"}, None),
        ({"spark.ui.enabled": "false"}, None),
        ({"spark.ui.enabled": "False ", "spark.ui.port": "4999"}, None),
    ],
)
def test_driver_ui_port(conf: dict[str, str], expected: int | None) -> None:
    assert driver_ui_port(SparkEngine(conf=conf), 4040) == expected


def test_driver_apps_url() -> None:
    assert driver_apps_url(4041) == "http://127.0.0.1:4041/api/v1/applications"


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        (SparkEngine(master="spark://head.lan:7077"), "http://head.lan:8080/json"),
        (SparkEngine(master="spark://10.0.0.5:7077", ui_port=18080), "http://10.0.0.5:18080/json"),
        (SparkEngine(master="yarn"), None),
        (SparkEngine(master="local[4]"), None),
    ],
)
def test_master_json_url(engine: SparkEngine, expected: str | None) -> None:
    assert master_json_url(engine) == expected


def worker(state: str, cores: object, memory: object) -> dict[str, object]:
    return {"id": "w", "state": state, "cores": cores, "memory": memory}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"workers": [worker("ALIVE", 1, 1024)]}, (1.0, 1024)),
        (
            {"workers": [worker("ALIVE", 4, 8192), worker("ALIVE", 8, 4096)]},
            (8.0, 4096),  # the most cores; memory decides between equals
        ),
        ({"workers": [worker("ALIVE", 4, 2048), worker("ALIVE", 4, 8192)]}, (4.0, 8192)),
        ({"workers": [worker("DEAD", 64, 65536), worker("ALIVE", 2, 2048)]}, (2.0, 2048)),
        ({"workers": [worker("ALIVE", "many", 1024)]}, None),
        ({"workers": []}, None),
        ({}, None),
        (None, None),
    ],
)
def test_largest_worker(state: object, expected: tuple[float, int] | None) -> None:
    assert largest_worker(state) == expected


@pytest.mark.parametrize(
    ("engine", "says"),
    [
        (SparkEngine(master="spark://h:7077"), None),
        (SparkEngine(submit="/opt/spark-3.5/bin/spark-submit"), None),
        (SparkEngine(submit="spark-submit; rm -rf /"), "--submit"),
        (SparkEngine(submit="my spark-submit"), "--submit"),
        (SparkEngine(submit=""), "--submit"),
        (SparkEngine(ui_port=0), "--ui-port"),
        (SparkEngine(ui_port=70000), "--ui-port"),
        (SparkEngine(master="mesos://h:5050"), "--master"),
        (SparkEngine(conf={"executor.memory": "2g"}), "--conf"),
    ],
)
def test_spark_engine_problems(engine: SparkEngine, says: str | None) -> None:
    why = problem(engine)
    if says is None:
        assert why is None
    else:
        assert why is not None and why.startswith(says)
