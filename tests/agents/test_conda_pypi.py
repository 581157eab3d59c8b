"""Conda specs as pip requirements, and uv's resolution errors read back as package names."""

from __future__ import annotations

from pathlib import Path

import pytest

from sortie.agents.conda_pypi import (
    CondaSpecError,
    no_conda_note,
    not_on_pypi,
    not_on_pypi_message,
    pip_requirement,
)
from sortie.agents.envcache import EnvError, build_steps, normalise
from sortie.proto import messages as m

SPECS = [
    ("numpy", "numpy"),
    ("numpy=1.26", "numpy==1.26.*"),
    ("numpy 1.26", "numpy==1.26.*"),
    ("numpy=1.26=py311h64a7726_0", "numpy==1.26.*"),
    ("numpy=1.26.*", "numpy==1.26.*"),
    ("numpy==1.26.4", "numpy==1.26.4"),
    ("numpy>=1.20,<2", "numpy>=1.20,<2"),
    ("numpy >=1.20", "numpy>=1.20"),
    ("conda-forge::scikit-learn", "scikit-learn"),
    ("conda-forge::scikit-learn=1.4", "scikit-learn==1.4.*"),
    ("six *", "six"),
]


@pytest.mark.parametrize(("spec", "requirement"), SPECS)
def test_conda_spec_as_pip_requirement(spec: str, requirement: str) -> None:
    assert pip_requirement(spec) == requirement


@pytest.mark.parametrize("spec", ["", "numpy=[1.2]"])
def test_unreadable_spec_is_refused_naming_it(spec: str) -> None:
    with pytest.raises(CondaSpecError, match="cannot read"):
        pip_requirement(spec)


def test_the_log_line_names_the_packages() -> None:
    assert no_conda_note(["numpy=1.26", "scikit-learn"]) == (
        "no conda on this host: installing conda packages numpy, scikit-learn from PyPI with uv"
    )


UV_NOT_FOUND = """\
  x No solution found when resolving dependencies:
  ╰─▶ Because Sortie_No_Such.pkg was not found in the package registry and you require
      sortie-no-such-pkg, we can conclude that your requirements are unsatisfiable.
"""
UV_NO_VERSION = """\
error: No solution found when resolving dependencies
  cause: Because there is no version of six==99.* and you require six==99.*, we can conclude
"""


def test_uv_errors_name_the_conda_packages_pypi_lacks() -> None:
    specs = ["numpy", "sortie-no-such-pkg=1.0", "six=99"]
    assert not_on_pypi(specs, UV_NOT_FOUND) == ["sortie-no-such-pkg=1.0"]
    assert not_on_pypi(specs, UV_NO_VERSION) == ["six=99"]
    assert not_on_pypi(specs, "network unreachable") == []
    message = not_on_pypi_message(["sortie-no-such-pkg=1.0"])
    assert "conda package sortie-no-such-pkg=1.0 was not found on PyPI" in message
    assert "install conda or micromamba" in message


def test_build_steps_without_conda_install_conda_packages_with_uv_first() -> None:
    py = normalise(
        m.PythonEnvironment(
            user_managed=False,
            conda=["scikit-learn", "numpy=1.26"],
            pip=["six"],
            python_version="3.11",
            channels=["conda-forge"],
        )
    )
    assert build_steps(py, Path("/e/x"), uv_bin="/bin/uv", conda_bin=None) == [
        ["/bin/uv", "venv", "/e/x", "--python", "3.11"],
        [
            "/bin/uv", "pip", "install", "--python", "/e/x/bin/python",
            "numpy==1.26.*", "scikit-learn", "six",
        ],
    ]  # fmt: skip


def test_build_steps_refuse_a_spec_without_a_pypi_form() -> None:
    py = m.PythonEnvironment(user_managed=False, conda=["numpy=[1.2]"])
    with pytest.raises(EnvError, match=r"numpy=\[1\.2\].*name=version"):
        build_steps(py, Path("/e/x"), uv_bin="/bin/uv", conda_bin=None)
