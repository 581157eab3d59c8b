"""Conda packages installed from PyPI, for an agent host that has neither conda nor micromamba.

Many conda packages (scikit-learn, numpy, pandas, ...) exist on PyPI under the same name, so
such an environment is built with uv: each conda spec becomes the pip requirement that means
the same (``numpy=1.26`` is conda's "1.26.*"), and the run's log says so. A package PyPI does
not have fails the build early with its name, read from uv's resolution error.

Pure: specs and uv's output in, requirements and messages out.
"""

from __future__ import annotations

import re

_SPEC = re.compile(r"^(?:[^:\s]+::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<rest>.*)$")
_VERSION = re.compile(r"^[A-Za-z0-9_.*+!\-]+$")
# uv: "Because NAME was not found in the package registry ..." and
# "Because there is no version of NAME==1.2.* and you require ..."
_NOT_FOUND = re.compile(r"\b(?P<name>[A-Za-z0-9_.\-]+) was not found in the package registry")
_NO_VERSION = re.compile(r"\bno versions? of (?P<name>[A-Za-z0-9_.\-]+)")


class CondaSpecError(ValueError):
    """A conda spec that has no PyPI equivalent the agent can write; the message says which."""


def canonical(name: str) -> str:
    """PyPI's normal form of a project name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def package_name(spec: str) -> str:
    """``conda-forge::numpy=1.26`` -> ``numpy``."""
    m = _SPEC.match(spec.strip())
    return m.group("name") if m else spec.strip()


def pip_requirement(spec: str) -> str:
    """The pip requirement meaning the same as the conda spec.

    ``numpy`` -> ``numpy``; ``numpy=1.26`` and ``numpy 1.26`` -> ``numpy==1.26.*``;
    ``numpy=1.26=py311h1`` (a build string) -> ``numpy==1.26.*``; ``numpy==1.26.4`` and
    ``numpy>=1.20,<2`` are kept as they are; a channel prefix (``conda-forge::``) is dropped.
    """
    m = _SPEC.match(spec.strip())
    if m is None:
        raise CondaSpecError(f"cannot read the conda package {spec!r}")
    name, rest = m.group("name"), m.group("rest").strip()
    if not rest or rest == "*":
        return name
    if rest[0] in "<>!~" or rest.startswith("=="):
        return name + rest.replace(" ", "")
    version = (rest[1:] if rest.startswith("=") else rest).split("=")[0].split()[0]
    if not _VERSION.match(version):
        raise CondaSpecError(f"cannot read the version of the conda package {spec!r}")
    if version.endswith("*"):
        return f"{name}=={version}"
    return f"{name}=={version}.*"


def no_conda_note(specs: list[str]) -> str:
    """The run's log line that says conda packages come from PyPI."""
    names = ", ".join(package_name(s) for s in specs)
    return f"no conda on this host: installing conda packages {names} from PyPI with uv"


def not_on_pypi(specs: list[str], uv_output: str) -> list[str]:
    """The conda specs whose package uv said PyPI lacks (or has no matching version of)."""
    missing = {canonical(m.group("name")) for m in _NOT_FOUND.finditer(uv_output)}
    no_version = {canonical(m.group("name")) for m in _NO_VERSION.finditer(uv_output)}
    return [s for s in specs if canonical(package_name(s)) in missing | no_version]


def not_on_pypi_message(specs: list[str]) -> str:
    """What a user reads when conda packages cannot be installed from PyPI."""
    many = len(specs) > 1
    return (
        f"conda package{'s' if many else ''} {', '.join(specs)} "
        f"{'were' if many else 'was'} not found on PyPI (no matching name or version), and "
        "this agent host has neither conda nor micromamba to install "
        f"{'them' if many else 'it'} from conda channels: use the package's PyPI name (or "
        "move it to the pip list), or install conda or micromamba on the agent host"
    )
