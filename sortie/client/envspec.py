"""Turn what a user gives (packages, a requirements file, a conda-style YAML, an interpreter)
into a :class:`proto.messages.PythonEnvironment`.

Exactly one of these is used per run. Parsing is strict where silence would surprise later:
a pip option the agent would not honour (``--index-url``, ``-e``, constraints) is refused
here, naming the file and line, instead of being dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sortie.proto.messages import PythonEnvironment


class EnvSpecError(ValueError):
    """An environment description that cannot be used; the message says where and why."""


SUPPORTED = (
    "supported are requirement specifiers (e.g. 'numpy>=1.26', 'torch==2.3.*; "
    "sys_platform==\"linux\"', 'pkg @ https://...'), comments and '-r other.txt' includes"
)

_INCLUDE = re.compile(r"^(?:-r\s*|--requirement(?:\s*=\s*|\s+))(?P<file>\S.*)$")
_CONSTRAINT = re.compile(r"^(?:-c|--constraint)\b")


def user_managed(interpreter: str | None = None) -> PythonEnvironment:
    """Use ``interpreter`` (or the agent's own Python) as is; nothing is installed."""
    return PythonEnvironment(user_managed=True, interpreter=interpreter or None)


def _check_requirement(req: str, where: str) -> str:
    req = req.strip()
    if not req:
        raise EnvSpecError(f"{where}: empty requirement")
    if _CONSTRAINT.match(req):
        raise EnvSpecError(
            f"{where}: constraints files ({req!r}) are not supported; pin the versions in "
            f"the requirements themselves. {SUPPORTED}"
        )
    if req.startswith("-"):
        raise EnvSpecError(
            f"{where}: pip option {req!r} is not supported (package indexes, editable "
            f"installs and other options are set up on the agent, not per run); {SUPPORTED}"
        )
    if re.search(r"\s--?[A-Za-z]", req):
        raise EnvSpecError(
            f"{where}: per-requirement options in {req!r} (such as --hash) are not "
            f"supported; {SUPPORTED}"
        )
    return req


def from_pip(packages: list[str]) -> PythonEnvironment:
    """A system-managed environment from requirement strings, in order."""
    if isinstance(packages, str):
        raise EnvSpecError("pip packages must be a list of requirement strings, not one string")
    pip = [_check_requirement(p, f"pip package {i + 1}") for i, p in enumerate(packages)]
    return PythonEnvironment(user_managed=False, pip=pip)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with comments removed and backslash continuations joined, with line numbers."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        line = raw
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line = pending + line
        pending = ""
        # pip: a comment starts at '#' at line start or preceded by whitespace.
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append((start, line))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def _read_requirements(path: Path, seen: tuple[Path, ...]) -> list[str]:
    try:
        real = path.resolve()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = f" (included from {seen[-1]})" if seen else ""
        raise EnvSpecError(f"requirements file {path} does not exist{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvSpecError(f"cannot read requirements file {path}: {exc}") from None
    if real in seen:
        raise EnvSpecError(f"requirements file {path} includes itself (via -r)")
    reqs: list[str] = []
    for number, line in _logical_lines(text):
        where = f"{path}:{number}"
        include = _INCLUDE.match(line)
        if include:
            target = Path(include.group("file").strip())
            if not target.is_absolute():
                target = path.parent / target
            reqs.extend(_read_requirements(target, (*seen, real)))
            continue
        reqs.append(_check_requirement(line, where))
    return reqs


def from_requirements(path: Path) -> PythonEnvironment:
    """A system-managed environment from a pip requirements file (``-r`` includes followed)."""
    return PythonEnvironment(user_managed=False, pip=_read_requirements(Path(path), ()))


# --- conda-style YAML --------------------------------------------------------------------

_CONDA_SPEC = re.compile(r"^(?:(?P<channel>[^:\s]+)::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<rest>.*)$")


def _python_version(rest: str, where: str) -> str | None:
    """conda's version part of ``python...`` -> something uv accepts as a Python request.

    ``=3.11`` / ``==3.11.*`` / ``3.11`` / ``=3.11=h1234_0`` -> ``3.11``; ``>=3.10`` and
    other comparisons are kept as the specifier (``>=3.10``).
    """
    rest = rest.strip()
    if not rest:
        return None
    if rest.startswith("=") and not rest.startswith("=="):
        rest = rest[1:].split("=", 1)[0]  # "=3.11=build" -> "3.11"
    elif rest.startswith("=="):
        rest = rest[2:]
    elif rest[0] in "<>!~":
        return rest.replace(" ", "")
    elif " " in rest:
        rest = rest.split()[0]  # "python 3.11 build" (match-spec with spaces)
    rest = rest.removesuffix(".*").removesuffix("*").rstrip(".")
    if not re.fullmatch(r"\d+(\.\d+){0,2}", rest):
        raise EnvSpecError(
            f"{where}: cannot read a Python version from {rest!r}; write e.g. 'python=3.11' "
            f"or 'python>=3.10'"
        )
    return rest


def from_conda_file(path: Path) -> PythonEnvironment:
    """A system-managed environment from a conda-style YAML (``dependencies`` + ``pip:``)."""
    path = Path(path)
    return from_conda_mapping(load_conda_yaml(path), path)


def from_conda_mapping(doc: dict[Any, Any], path: Path) -> PythonEnvironment:
    """The same from the YAML's document (``path`` names it in errors; ``-r`` includes are
    relative to its folder)."""
    python_version: str | None = None
    conda: list[str] = []
    pip: list[str] = []
    for i, dep in enumerate(_conda_dependencies(doc, path), start=1):
        where = f"{path}: dependencies[{i}]"
        if isinstance(dep, dict):
            pip.extend(_pip_mapping(dep, path, where))
            continue
        name, rest = _conda_spec(dep, where)
        if name == "python":
            python_version = _python_version(rest, where)
        elif name == "pip":
            continue  # the pip section is honoured by building a venv; pip itself is implied
        else:
            conda.append(dep.strip())
    channels = doc.get("channels") or []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise EnvSpecError(f"{path}: 'channels' must be a list of channel names")
    return PythonEnvironment(
        user_managed=False,
        pip=pip,
        conda=sorted(conda),
        python_version=python_version,
        channels=[c.strip() for c in channels if c.strip()] if conda else [],
    )


def load_conda_yaml(path: Path) -> dict[Any, Any]:
    """The file's YAML document, which must be a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EnvSpecError(f"conda environment file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvSpecError(f"cannot read conda environment file {path}: {exc}") from None
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EnvSpecError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise EnvSpecError(
            f"{path}: expected a mapping with a 'dependencies' list (conda environment "
            f"format), got {type(doc).__name__}"
        )
    return doc


def _conda_dependencies(doc: dict[Any, Any], path: Path) -> list[Any]:
    deps = doc.get("dependencies", [])
    if deps is None:
        return []
    if not isinstance(deps, list):
        raise EnvSpecError(f"{path}: 'dependencies' must be a list, got {type(deps).__name__}")
    return deps


def _pip_mapping(dep: dict[Any, Any], path: Path, where: str) -> list[str]:
    """A ``pip: [...]`` entry of ``dependencies``: the only mapping conda allows there."""
    if set(dep) != {"pip"}:
        raise EnvSpecError(
            f"{where}: the only mapping allowed in 'dependencies' is 'pip: [...]', "
            f"got keys {sorted(map(str, dep))}"
        )
    return _pip_section(dep["pip"], path, where)


def _conda_spec(dep: Any, where: str) -> tuple[str, str]:
    """A conda package spec string -> (lower-case name, the version part after it)."""
    if isinstance(dep, int | float) or not isinstance(dep, str) or not dep.strip():
        raise EnvSpecError(
            f"{where}: expected a package spec string such as 'numpy=1.26', got {dep!r}"
        )
    match = _CONDA_SPEC.match(dep.strip())
    if match is None:
        raise EnvSpecError(f"{where}: cannot read conda package spec {dep!r}")
    return match.group("name").lower(), match.group("rest")


def _pip_section(section: Any, path: Path, where: str) -> list[str]:
    if section is None:
        return []
    if not isinstance(section, list) or not all(isinstance(s, str) for s in section):
        raise EnvSpecError(f"{where}: 'pip' must be a list of requirement strings")
    reqs: list[str] = []
    for j, line in enumerate(section, start=1):
        line = line.strip()
        include = _INCLUDE.match(line)
        if include:  # conda allows '-r file' in the pip section, relative to the YAML
            target = Path(include.group("file").strip())
            if not target.is_absolute():
                target = path.parent / target
            reqs.extend(_read_requirements(target, ()))
            continue
        reqs.append(_check_requirement(line, f"{where}.pip[{j}]"))
    return reqs
