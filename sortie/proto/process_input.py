"""The one rule for what a run's process is handed: its arguments and environment variables
(and no NUL in any other text of a spec: script, interpreter, packages, image, ...).

An argument or variable travels to ``execve`` as a C string, so a NUL byte would cut it short
without a word (the record would say ``'a\\x00b'``, the script would get ``'a'``). The scheduler
refuses such a spec for every client (``scheduler/validate.py``); the client checks the same
rule before hashing a byte of the snapshot. Messages about secret variables name the
variable, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

from sortie.proto import messages as m

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_PREFIX = "SORTIE_"


def argument_problem(arguments: Sequence[str]) -> str | None:
    """Why ``arguments`` cannot be passed to the script, or None if they can."""
    for i, arg in enumerate(arguments, start=1):
        if "\x00" in arg:
            return (
                f"script argument {i} ({arg[:80]!r}) contains a NUL byte, which a process "
                "cannot receive (it would be cut off there): remove it"
            )
    return None


def env_name_problem(names: Iterable[str]) -> str | None:
    """Why one of ``names`` cannot name an environment variable of a run, or None."""
    for key in names:
        if not ENV_NAME.fullmatch(key) or key.startswith(RESERVED_PREFIX):
            return (
                f"environment variable name {key[:80]!r} is not valid: use letters, digits "
                f"and '_', not starting with a digit; {RESERVED_PREFIX}* names are reserved"
            )
    return None


def env_value_problem(values: Mapping[str, str], *, secret: bool = False) -> str | None:
    """Why one of ``values`` cannot be set in a run's environment, or None. A secret's value
    is never quoted."""
    kind = "secret environment variable" if secret else "environment variable"
    for key, value in values.items():
        if "\x00" in value:
            return (
                f"the value of {kind} {key} contains a NUL byte, which a process cannot "
                "receive (it would be cut off there): remove it"
            )
    return None


def _texts(spec: m.RunSpec) -> Iterator[tuple[str, str]]:
    """The spec's text fields other than arguments and variables, named as a person knows
    them."""
    py, docker = spec.environment.python, spec.environment.docker
    yield "the script path", spec.script
    yield "the compute target", spec.target
    yield "the experiment name", spec.experiment
    for name, value in (
        ("the Python interpreter", py.interpreter),
        ("the Python version", py.python_version),
        ("the container image", docker.base_image),
        ("the container shm size", docker.shm_size),
        ("the GPU type", spec.resources.gpu_type),
        ("the submission id", spec.submission_id),
    ):
        if value is not None:
            yield name, value
    for kind, values in (
        ("pip package", py.pip),
        ("conda package", py.conda),
        ("conda channel", py.channels),
        ("container option", docker.arguments),
    ):
        for i, value in enumerate(values, start=1):
            yield f"{kind} {i}", value
    for key, value in spec.constraints.items():
        yield "a constraint's label", key
        yield f"constraint {key[:40]!r}", value


def spec_text_problem(spec: m.RunSpec) -> str | None:
    """Why one of the spec's other text fields (script, interpreter, packages, image, ...)
    cannot be used, or None: a NUL byte, which every file name, command line and program cuts
    off there."""
    for name, value in _texts(spec):
        if "\x00" in value:
            return (
                f"{name} ({value[:80]!r}) contains a NUL byte, which no file name, command or "
                "program can carry (it would be cut off there): remove it"
            )
    return None
