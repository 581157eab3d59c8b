"""The pure parts of the agent: table-driven cases."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sortie.agents.attempt import ChildEnv, child_env, exit_error, script_argv
from sortie.agents.config import default_agent_id
from sortie.agents.envcache import env_hash, normalise
from sortie.agents.executors import Outcome
from sortie.agents.facts import parse_meminfo, parse_nvidia_smi
from sortie.agents.metrics_fifo import parse_metric
from sortie.agents.publisher import split_output
from sortie.agents.snapshot_cache import refused_paths
from sortie.proto import messages as m
from sortie.proto.subjects import check_token


def sys_env(**kw: object) -> m.PythonEnvironment:
    return m.PythonEnvironment(user_managed=False, **kw)


def test_env_hash_of_known_environments_never_changes() -> None:
    """Cached environments keep their hash across versions (conda_from adds only when set)."""
    env = sys_env(pip=["six"])
    assert env_hash(env) == "0fae97639f4306462395d07cfadca2eca5cd5ce1118ef2d96d73f20a4fa29a6b"
    assert env_hash(env, conda_from="pypi") == env_hash(env)  # no conda packages: no effect
    with_conda = sys_env(conda=["numpy"], python_version="3.11", channels=["conda-forge"])
    assert env_hash(with_conda) == (
        "a3de464751db75a920c87b44c1a393f3612bb78e21c44e54f0c800a8df05b150"
    )
    assert env_hash(with_conda, conda_from="pypi") != env_hash(with_conda)


def test_env_hash_stable_and_normalised() -> None:
    a = sys_env(pip=["six", " numpy==1.26 "], conda=["b", "a"])
    b = sys_env(pip=["six", "numpy==1.26", ""], conda=["a", "b", "a"])
    assert env_hash(a) == env_hash(b)
    assert len(env_hash(a)) == 64
    # pip order is kept: it can matter
    assert env_hash(sys_env(pip=["a", "b"])) != env_hash(sys_env(pip=["b", "a"]))
    assert env_hash(sys_env(pip=["a"])) != env_hash(sys_env(pip=["a"], python_version="3.11"))
    # the interpreter field and user_managed flag do not decide a built env's content
    assert env_hash(a) == env_hash(m.PythonEnvironment(user_managed=True, pip=a.pip, conda=a.conda))
    assert normalise(a).conda == ["a", "b"]
    # a known value: the hash must not drift between releases without a salt bump
    assert env_hash(sys_env()) == env_hash(sys_env(pip=[], conda=[]))


@given(st.lists(st.text(min_size=1, max_size=8), max_size=5))
def test_env_hash_ignores_whitespace(pkgs: list[str]) -> None:
    assert env_hash(sys_env(pip=pkgs)) == env_hash(sys_env(pip=[f" {p} " for p in pkgs]))


@pytest.mark.parametrize(
    ("paths", "refused"),
    [
        (["a.py", "pkg/b.py"], 0),
        (["../x"], 1),
        (["/etc/passwd"], 1),
        (["a/./b"], 1),
        (["a", "a"], 1),
        (["a", "a/b"], 1),
        (["ok.py", "x\\y"], 1),
    ],
)
def test_refused_paths(paths: list[str], refused: int) -> None:
    manifest = m.Manifest(
        files=[m.FileEntry(path=p, size=0, mode=0o644, sha256="0" * 64) for p in paths]
    )
    assert len(refused_paths(manifest)) == refused


def test_split_output() -> None:
    assert split_output(b"a\nb\r\nc") == ["a", "b", "c"]
    assert split_output(b"\xff\xfe\n") == ["\ufffd\ufffd"]
    long = split_output(b"x" * 40000 + b"\n")
    assert [len(x) for x in long] == [16384, 16384, 40000 - 2 * 16384]
    assert split_output("é".encode()) == ["é"]


def test_parse_metric() -> None:
    p = parse_metric(b'{"name": "acc", "value": 0.9, "t": 1.5, "step": 3}')
    assert p == m.MetricPoint(name="acc", value=0.9, t=1.5, step=3)
    p2 = parse_metric(b'{"name": "n", "value": 2, "t": 1, "step": null}')
    assert isinstance(p2, m.MetricPoint) and p2.value == 2
    assert isinstance(parse_metric(b"not json"), str)
    assert isinstance(parse_metric(b'{"name": "", "value": 1, "t": 1}'), str)
    assert isinstance(parse_metric(b'{"name": "x", "value": [1], "t": 1}'), str)


def test_facts_parsing() -> None:
    assert parse_meminfo("MemTotal:       16384000 kB\nMemFree: 1 kB\n") == 16000
    assert parse_meminfo("") == 0
    assert parse_nvidia_smi("NVIDIA H100 80GB HBM3\nNVIDIA H100 80GB HBM3\n") == (
        2,
        "NVIDIA H100 80GB HBM3",
    )
    assert parse_nvidia_smi("") == (0, None)


@pytest.mark.parametrize(
    ("target", "host", "expected"),
    [
        ("local", "box", "local-box"),
        ("gpu", "node1.example.com", "gpu-node1-example-com"),
        ("cluster", "weird host*name>", "cluster-weird-host-name"),
    ],
)
def test_default_agent_id(target: str, host: str, expected: str) -> None:
    got = default_agent_id(target, host)
    assert got == expected
    assert check_token("agent id", got) == got


def test_script_argv() -> None:
    p = Path("/w")
    assert script_argv("/py", p / "train.py", ["--x"]) == ["/py", "/w/train.py", "--x"]
    assert script_argv("/py", p / "run.sh", []) == ["sh", "/w/run.sh"]
    assert script_argv("/py", p / "bin/tool", ["a"]) == ["/w/bin/tool", "a"]


def test_exit_error() -> None:
    assert exit_error(Outcome(exit_code=0), None) is None
    e = exit_error(Outcome(exit_code=3), None)
    assert e is not None and e.kind == "exit_code" and e.message == "script exited with code 3"
    e = exit_error(Outcome(exit_code=-signal.SIGKILL), None)
    assert e is not None and "SIGKILL" in e.message
    e = exit_error(Outcome(exit_code=-15, timed_out=True), 2.5)
    assert e is not None and e.kind == "timeout" and "max_duration_s=2.5" in e.message


def test_child_env() -> None:
    spec = m.RunSpec(
        experiment="exp", script="t.py", snapshot_id="s", target="gpu", env_vars={"A": "1"}
    )
    env = child_env(
        {"PATH": "/bin", "PYTHONPATH": "/old"},
        spec,
        ChildEnv(
            run_id="r1",
            attempt=2,
            metrics_file=Path("/m"),
            outputs_dir=Path("/w/outputs"),
            runtime_dir=Path("/rt"),
        ),
    )
    assert env["A"] == "1" and env["PATH"] == "/bin"
    assert env["SORTIE_RUN_ID"] == "r1" and env["SORTIE_ATTEMPT"] == "2"
    assert env["SORTIE_EXPERIMENT"] == "exp" and env["SORTIE_TARGET"] == "gpu"
    assert env["SORTIE_METRICS_FILE"] == "/m" and env["SORTIE_OUTPUTS_DIR"] == "/w/outputs"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"] == "/rt:/old"
    assert env["SORTIE_NODE_PRIORITY"] == "dedicated"
    assert "SORTIE_STOP_REASON_FILE" not in env and "CUDA_VISIBLE_DEVICES" not in env


@pytest.mark.parametrize(("gpus", "visible"), [(None, "host"), ([], ""), ([1, 4], "1,4")])
def test_child_env_stop_file_priority_and_gpus(gpus: list[int] | None, visible: str) -> None:
    # the user's own CUDA_VISIBLE_DEVICES never wins over the agent's choice
    spec = m.RunSpec(
        experiment="e", script="t.py", snapshot_id="s", env_vars={"CUDA_VISIBLE_DEVICES": "7"}
    )
    env = child_env(
        {"CUDA_VISIBLE_DEVICES": "host"},
        spec,
        ChildEnv(
            run_id="r1",
            attempt=1,
            metrics_file=Path("/m"),
            outputs_dir=Path("/w/outputs"),
            runtime_dir=Path("/rt"),
            stop_reason_file=Path("/runs/r1/1.stop-reason"),
            node_priority="lowpriority",
            gpus=gpus,
        ),
    )
    assert env["SORTIE_STOP_REASON_FILE"] == "/runs/r1/1.stop-reason"
    assert env["SORTIE_NODE_PRIORITY"] == "lowpriority"
    if gpus is None:  # an agent without GPUs leaves CUDA as the user set it
        assert env["CUDA_VISIBLE_DEVICES"] == "7" and "CUDA_DEVICE_ORDER" not in env
    else:
        assert env["CUDA_VISIBLE_DEVICES"] == visible
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_build_steps_for_a_pip_environment() -> None:
    from pathlib import Path

    from sortie.agents.envcache import build_steps, normalise
    from sortie.proto import messages as m

    py = normalise(
        m.PythonEnvironment(user_managed=False, pip=["six", "numpy<3"], python_version="3.11")
    )
    steps = build_steps(py, Path("/e/x"), uv_bin="/bin/uv", conda_bin=None)
    assert steps == [
        ["/bin/uv", "venv", "/e/x", "--python", "3.11"],
        ["/bin/uv", "pip", "install", "--python", "/e/x/bin/python", "six", "numpy<3"],
    ]


def test_build_steps_for_a_conda_environment() -> None:
    from pathlib import Path

    from sortie.agents.envcache import build_steps, normalise
    from sortie.proto import messages as m

    py = normalise(
        m.PythonEnvironment(
            user_managed=False,
            conda=["numpy=1.26", "cudatoolkit=11.8"],
            pip=["six"],
            python_version="3.11",
            channels=["conda-forge", "nvidia"],
        )
    )
    steps = build_steps(py, Path("/e/x"), uv_bin="/bin/uv", conda_bin="/opt/mm/micromamba")
    assert steps == [
        [
            "/opt/mm/micromamba",
            "create",
            "--yes",
            "--prefix",
            "/e/x",
            "-c",
            "conda-forge",
            "-c",
            "nvidia",
            "python=3.11",
            "cudatoolkit=11.8",
            "numpy=1.26",
        ],
        ["/bin/uv", "pip", "install", "--python", "/e/x/bin/python", "six"],
    ]
    ranged = normalise(
        m.PythonEnvironment(user_managed=False, conda=["x"], python_version=">=3.10")
    )
    assert build_steps(ranged, Path("/e"), uv_bin="uv", conda_bin="conda")[0][-2] == "python>=3.10"


def test_lease_lapses_once_per_gap_and_a_late_renewal_still_reports_the_gap() -> None:
    from sortie.agents.lease import Lease

    lease = Lease(lease_s=10.0, renewed_at=0.0)
    assert not lease.lapse_seen(9.9)
    assert not lease.renew(9.5)  # renewed in time
    assert lease.lapse_seen(19.6) and not lease.lapse_seen(25.0)  # seen once
    assert not lease.renew(26.0)  # already seen (and acted on) by the watcher
    # a paused agent: nobody looked during the gap; the renewal itself reports it
    assert lease.renew(40.0)
    assert not lease.lapse_seen(45.0)
