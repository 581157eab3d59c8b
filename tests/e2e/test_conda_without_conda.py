"""Conda packages on an agent host without conda or micromamba: installed from PyPI with uv
under the same names (the run's log says so), or the run fails early naming the package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e.conftest import Installation


def submit(installation: Installation, tmp_path: Path, conda_yaml: str) -> tuple[int, str]:
    """Submit ``use_six.py`` with ``conda_yaml`` and wait; (exit code, run id)."""
    assert shutil.which("conda") is None and shutil.which("micromamba") is None
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "use_six.py").write_text("import six\nprint('six', six.__version__)\n")
    (tmp_path / "env.yml").write_text(conda_yaml)
    proc = installation.cli(
        "run", "submit", str(src), "--script", "use_six.py",
        "--conda-file", str(tmp_path / "env.yml"), "--wait", "--output", "json",
        timeout=300,
    )  # fmt: skip
    return proc.returncode, json.loads(proc.stdout.splitlines()[0])["run_id"]


def test_conda_packages_come_from_pypi_and_the_log_says_so(
    installation: Installation, tmp_path: Path
) -> None:
    code, run_id = submit(
        installation,
        tmp_path,
        "name: t\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n"
        "  - six=1.17\n  - pip\n",
    )
    logs = installation.cli("run", "logs", run_id, check=True).stdout
    assert code == 0, logs
    assert "no conda on this host: installing conda packages six from PyPI with uv" in logs
    assert "six 1.17.0" in logs
    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict) and shown["state"] == "Completed"


def test_a_conda_package_pypi_lacks_fails_the_run_naming_it(
    installation: Installation, tmp_path: Path
) -> None:
    code, run_id = submit(
        installation,
        tmp_path,
        "dependencies:\n  - sortie-no-such-conda-zq9=1.0\n  - pip:\n      - six\n",
    )
    assert code == 1
    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict)
    assert shown["state"] == "Failed" and shown["error"]["kind"] == "environment"
    message = shown["error"]["message"]
    assert message.startswith("conda package sortie-no-such-conda-zq9=1.0 was not found on PyPI")
    assert "micromamba" in message
    logs = installation.cli("run", "logs", run_id, check=True).stdout
    assert "installing conda packages sortie-no-such-conda-zq9 from PyPI with uv" in logs
    assert "six 1." not in logs  # the script never ran
