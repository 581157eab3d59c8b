"""envspec: requirements files, conda-style YAML, pip lists, user-managed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sortie.client.envspec import (
    EnvSpecError,
    from_conda_file,
    from_pip,
    from_requirements,
    user_managed,
)
from sortie.proto.messages import PythonEnvironment


def test_user_managed() -> None:
    assert user_managed("/opt/py/bin/python") == PythonEnvironment(
        user_managed=True, interpreter="/opt/py/bin/python"
    )
    assert user_managed(None) == PythonEnvironment(user_managed=True, interpreter=None)


def test_from_pip() -> None:
    env = from_pip(["numpy>=1.26", " scikit-learn "])
    assert env == PythonEnvironment(user_managed=False, pip=["numpy>=1.26", "scikit-learn"])


@pytest.mark.parametrize(
    ("packages", "error"),
    [
        (["-e ."], "pip option '-e .' is not supported"),
        (["--index-url=https://x"], "pip option"),
        ([""], "empty requirement"),
        ("numpy", "must be a list"),
    ],
)
def test_from_pip_refuses(packages: list[str], error: str) -> None:
    with pytest.raises(EnvSpecError, match=error):
        from_pip(packages)


# --- requirements files --------------------------------------------------------------------


def test_requirements_with_include_comments_and_continuation(tmp_path: Path) -> None:
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs/base.txt").write_text("numpy==1.26.4  # pinned\n-r more/extra.txt\n")
    (tmp_path / "reqs/more").mkdir()
    (tmp_path / "reqs/more/extra.txt").write_text("pandas\n")
    (tmp_path / "requirements.txt").write_text(
        "# training deps\n"
        "\n"
        "torch>=2.1 ; sys_platform == 'linux'\n"
        "--requirement reqs/base.txt\n"
        "scikit-learn \\\n"
        "    >=1.4\n"
        "mylib @ https://example.com/mylib-1.0.tar.gz#sha256=abc\n"
        "-rreqs/more/extra.txt\n"
    )
    env = from_requirements(tmp_path / "requirements.txt")
    assert env == PythonEnvironment(
        user_managed=False,
        pip=[
            "torch>=2.1 ; sys_platform == 'linux'",
            "numpy==1.26.4",
            "pandas",
            "scikit-learn     >=1.4",
            "mylib @ https://example.com/mylib-1.0.tar.gz#sha256=abc",
            "pandas",
        ],
    )


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("--index-url https://pypi.example/simple", r"requirements.txt:2: pip option '--index-url"),
        ("-e ./mylib", r"requirements.txt:2: pip option '-e ./mylib' is not supported"),
        ("--extra-index-url=https://x", "pip option"),
        ("-f ./wheels", "pip option"),
        ("-c constraints.txt", r"requirements.txt:2: constraints files .* are not supported"),
        ("--constraint constraints.txt", "constraints files"),
        ("numpy==1.26 --hash=sha256:abc", "per-requirement options"),
    ],
)
def test_requirements_refused_lines(tmp_path: Path, line: str, error: str) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text(f"numpy\n{line}\n")
    with pytest.raises(EnvSpecError, match=error) as err:
        from_requirements(req)
    assert "supported are requirement specifiers" in str(err.value)


def test_requirements_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EnvSpecError, match=r"requirements file .*nope.txt does not exist"):
        from_requirements(tmp_path / "nope.txt")


def test_requirements_missing_include_names_includer(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("-r gone.txt\n")
    with pytest.raises(EnvSpecError, match=r"gone.txt does not exist \(included from .*r.txt\)"):
        from_requirements(tmp_path / "r.txt")


def test_requirements_include_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x\n-r b.txt\n")
    (tmp_path / "b.txt").write_text("-r a.txt\n")
    with pytest.raises(EnvSpecError, match="includes itself"):
        from_requirements(tmp_path / "a.txt")


def test_requirements_same_file_twice_is_fine(tmp_path: Path) -> None:
    (tmp_path / "common.txt").write_text("six\n")
    (tmp_path / "r.txt").write_text("-r common.txt\n-r common.txt\n")
    assert from_requirements(tmp_path / "r.txt").pip == ["six", "six"]


# --- conda-style YAML ------------------------------------------------------------------------

CONDA = """\
name: digits
channels:
  - conda-forge
  - defaults
dependencies:
  - python=3.11
  - pip
  - numpy=1.26
  - conda-forge::cudatoolkit=11.8
  - pip:
      - scikit-learn>=1.4
      - -r extra.txt
"""


def test_conda_file(tmp_path: Path) -> None:
    (tmp_path / "extra.txt").write_text("pandas\n")
    (tmp_path / "env.yml").write_text(CONDA)
    assert from_conda_file(tmp_path / "env.yml") == PythonEnvironment(
        user_managed=False,
        pip=["scikit-learn>=1.4", "pandas"],
        conda=["conda-forge::cudatoolkit=11.8", "numpy=1.26"],
        python_version="3.11",
        channels=["conda-forge", "defaults"],
    )


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        ("python=3.11", "3.11"),
        ("python==3.11.*", "3.11"),
        ("python=3.11.*", "3.11"),
        ("python==3.11.4", "3.11.4"),
        ("python=3.10=h12345_0", "3.10"),
        ("python>=3.10", ">=3.10"),
        ("python >=3.10,<3.13", ">=3.10,<3.13"),
        ("python 3.12", "3.12"),
        ("conda-forge::python=3.12", "3.12"),
        ("python", None),
    ],
)
def test_conda_python_version(tmp_path: Path, spec: str, version: str | None) -> None:
    (tmp_path / "env.yml").write_text(f"dependencies:\n  - {spec!r}\n")
    env = from_conda_file(tmp_path / "env.yml")
    assert env.python_version == version
    assert env.conda == []


def test_conda_only_pip(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text("dependencies:\n  - pip:\n    - torch\n")
    assert from_conda_file(tmp_path / "env.yml") == PythonEnvironment(
        user_managed=False, pip=["torch"]
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("dependencies: [python=3.11\n", "is not valid YAML"),
        ("- numpy\n- scipy\n", "expected a mapping with a 'dependencies' list"),
        ("dependencies: numpy\n", "'dependencies' must be a list"),
        ("dependencies:\n  - 3.11\n", r"dependencies\[1\]: expected a package spec string"),
        ("dependencies:\n  - numpy\n  - conda: [x]\n", r"dependencies\[2\]: the only mapping"),
        ("dependencies:\n  - pip: torch\n", "'pip' must be a list of requirement strings"),
        ("dependencies:\n  - pip:\n    - --index-url https://x\n", r"pip\[1\]: pip option"),
        ("dependencies:\n  - python=banana\n", "cannot read a Python version"),
    ],
)
def test_conda_bad_files(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "environment.yml"
    path.write_text(text)
    with pytest.raises(EnvSpecError, match=error) as err:
        from_conda_file(path)
    assert "environment.yml" in str(err.value)


def test_conda_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EnvSpecError, match=r"conda environment file .*env\.yml does not exist"):
        from_conda_file(tmp_path / "env.yml")
