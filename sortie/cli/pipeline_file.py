"""Pipeline files: `sortie pipeline submit -f pipeline.yml`, a pipeline written as YAML.

:class:`PipelineFile` is the file's shape: it decodes the file (msgspec, unknown keys
refused) and generates ``docs/pipeline.schema.json`` (``python -m sortie.cli.pipeline_file``).
A step's run settings are a job file's (``cli/jobfile.py``): each step, with ``defaults:``
filled in, becomes a ``JobFile`` and then, as `sortie run submit -f` does, the run
configuration its flags would build (``jobfile.flag_defaults`` -> ``submit.script_run_config``),
so a step runs exactly as the same job file would. Paths are relative to the file.

In a step's ``arguments``, ``${{data.NAME}}`` is the local path of PipelineData ``NAME`` (one
of the step's ``inputs`` or ``outputs``) and ``${{params.NAME}}`` the value of parameter
``NAME`` (declared under ``parameters:``). The graph itself (cycles, producers) is checked
by the scheduler, before anything is uploaded.

Every error names the file, the line and the field (``pipeline.yml:12: steps[1].inputs[0]:
...``), as a job file's do.
"""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from sortie.cli import jobfile
from sortie.cli.jobfile import (
    EnvironmentFile,
    JobFile,
    JobFileError,
    Located,
    ResourcesFile,
    Scalar,
    Text,
    check_job,
    decode,
    flag_defaults,
    read_yaml,
)
from sortie.proto import pipelines as p

if TYPE_CHECKING:
    from sortie.client.pipeline_submit import StepConfig

ParamValue = str | int | float | bool
Name = Annotated[str, msgspec.Meta(pattern=p.NAME_RE.pattern)]
_RUN_SETTINGS = (  # the StepSettings a step takes from defaults: unless it gives its own
    "target",
    "environment",
    "resources",
    "node_count",
    "priority",
    "max_run_duration_seconds",
    "max_retries",
    "dedicated_only",
    "strategy",
    "queue_timeout_seconds",
)
_PLACEHOLDER = re.compile(r"\$\{\{\s*(?P<body>[^}]*?)\s*\}\}")
_REF = re.compile(r"^(?P<kind>data|params)\.(?P<name>[A-Za-z][A-Za-z0-9_-]{0,62})$")


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class StepSettings(_Section, frozen=True, kw_only=True):
    """How a step runs (a job file's settings): under ``defaults:`` for every step, and on a
    step for itself (a step's value wins; a section such as ``environment`` is taken whole;
    ``environment_variables`` and ``constraints`` are merged)."""

    target: Text | None = None
    environment: EnvironmentFile | None = None
    resources: ResourcesFile | None = None
    node_count: Annotated[int, msgspec.Meta(ge=1)] | None = None
    priority: int | None = None
    environment_variables: dict[str, Scalar] = {}
    secret_environment_variables: list[Text] = []
    max_run_duration_seconds: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0)] | None = None
    constraints: dict[str, Scalar] = {}
    dedicated_only: bool | None = None
    strategy: Literal["binpack", "spread"] | None = None
    queue_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] | None = None


class StepFile(StepSettings, frozen=True, kw_only=True):
    """One step: a script run on its own target, reading and writing PipelineData."""

    name: Annotated[Name, msgspec.Meta(description="unique in the pipeline")]
    script: Annotated[Text, msgspec.Meta(description="the script's path in source_directory")]
    source_directory: Annotated[
        str, msgspec.Meta(description="the folder to snapshot, relative to this file")
    ] = "."
    arguments: Annotated[
        list[Scalar],
        msgspec.Meta(
            description="the script's arguments; ${{data.NAME}}: PipelineData NAME's local "
            "path, ${{params.NAME}}: parameter NAME's value"
        ),
    ] = []
    inputs: Annotated[list[Name], msgspec.Meta(description="PipelineData it reads")] = []
    outputs: Annotated[list[Name], msgspec.Meta(description="PipelineData it writes")] = []
    run_after: Annotated[
        list[Name], msgspec.Meta(description="steps that must succeed first (no data link)")
    ] = []
    allow_reuse: Annotated[
        bool, msgspec.Meta(description="reuse an earlier run with the same key (default)")
    ] = True


class PipelineFile(_Section, frozen=True, kw_only=True):
    """A pipeline: steps on their own targets, data between them, reuse by content."""

    name: Annotated[
        Name, msgspec.Meta(description="shown in lists; with the experiment, keys reuse notes")
    ]
    experiment: Text = "default"
    description: str = ""
    parameters: Annotated[
        dict[Name, ParamValue],
        msgspec.Meta(description="name -> default value (--param NAME=VALUE sets one)"),
    ] = {}
    tags: Annotated[dict[str, Scalar], msgspec.Meta(description="the pipeline run's tags")] = {}
    defaults: StepSettings = StepSettings()
    steps: Annotated[list[StepFile], msgspec.Meta(min_length=1)]


def load(path: Path) -> tuple[PipelineFile, Located]:
    """The pipeline file at ``path``, checked (each step as a job file is). Raises
    ``JobFileError`` naming the line and the field."""
    data, where = read_yaml(
        path, "pipeline file", "name:, steps:, parameters:, ...", "docs/pipeline.schema.json"
    )
    pf = decode(data, where, PipelineFile)
    for i, step in enumerate(pf.steps):
        check_job(job_of(pf, step, i, where), _Within(where, ("steps", i)))
    return pf, where


class _Within(Located):
    """Errors about a step's job file said at the step's place in the pipeline file."""

    def __init__(self, outer: Located, prefix: tuple[str | int, ...]) -> None:
        super().__init__(outer.name, outer.root)
        self.prefix = prefix

    def error(self, path: tuple[str | int, ...], text: str, *, key: bool = False) -> JobFileError:
        return super().error((*self.prefix, *path), text, key=key)


def _arguments(pf: PipelineFile, step: StepFile, i: int, where: Located) -> list[str]:
    """The step's arguments with ``${{data.NAME}}`` and ``${{params.NAME}}`` as tokens."""
    data = {*step.inputs, *step.outputs}

    def token(j: int, match: re.Match[str]) -> str:
        ref = _REF.match(match["body"])
        at = ("steps", i, "arguments", j)
        if ref is None:
            raise where.error(at, f"{match[0]}: write ${{{{data.NAME}}}} or ${{{{params.NAME}}}}")
        name = ref["name"]
        if ref["kind"] == "data":
            if name not in data:
                raise where.error(
                    at,
                    f"{match[0]}: {name!r} is not among the step's inputs or outputs "
                    f"({', '.join(sorted(data)) or 'none'}): add it to one of them",
                )
            return p.data_token(name)
        if name not in pf.parameters:
            raise where.error(
                at, f"{match[0]}: no parameter {name!r}: declare it under parameters:"
            )
        return p.param_token(name)

    out: list[str] = []
    for j, arg in enumerate(step.arguments):
        out.append(_PLACEHOLDER.sub(functools.partial(token, j), str(arg)))
    return out


def _setting(step: StepFile, defaults: StepSettings, name: str) -> Any:
    mine = getattr(step, name)
    return getattr(defaults, name) if mine is None else mine


def job_of(pf: PipelineFile, step: StepFile, i: int, where: Located) -> JobFile:
    """The step as a job file, with the pipeline's defaults filled in."""
    d = pf.defaults
    given: dict[str, Any] = {
        name: value for name in _RUN_SETTINGS if (value := _setting(step, d, name)) is not None
    }
    return JobFile(
        source_directory=step.source_directory,
        script=step.script,
        arguments=list(_arguments(pf, step, i, where)),
        experiment=pf.experiment,
        environment_variables={**d.environment_variables, **step.environment_variables},
        secret_environment_variables=list(
            dict.fromkeys([*d.secret_environment_variables, *step.secret_environment_variables])
        ),
        constraints={**d.constraints, **step.constraints},
        **given,
    )


def step_configs(pf: PipelineFile, where: Located, base: Path) -> list[StepConfig]:
    """Each step as the client submits it: the run configuration `sortie run submit -f`
    would build from the step's job file (``base``: the file's folder)."""
    from sortie.cli.submit import script_run_config
    from sortie.client.pipeline_submit import StepConfig

    out: list[StepConfig] = []
    for i, step in enumerate(pf.steps):
        flags = argparse.Namespace(
            docker_image=None, docker_shm_size=None, docker_arg=[], docker_gpus=False
        )
        vars(flags).update(flag_defaults(job_of(pf, step, i, where), base))
        source = Path(flags.source_dir)
        if not source.is_dir():
            raise where.error(("steps", i, "source_directory"), f"{source} is not a directory")
        out.append(
            StepConfig(
                name=step.name,
                config=script_run_config(flags, []),
                inputs=list(step.inputs),
                outputs=list(step.outputs),
                run_after=list(step.run_after),
                allow_reuse=step.allow_reuse,
            )
        )
    return out


def param_values(pf: PipelineFile, given: list[str]) -> dict[str, ParamValue]:
    """``--param NAME=VALUE`` flags, each read as its default's type (true/false, a number,
    text). Raises ``JobFileError`` for an unknown name or a value of the wrong type."""
    out: dict[str, ParamValue] = {}
    for pair in given:
        name, sep, text = pair.partition("=")
        if not sep or name not in pf.parameters:
            known = ", ".join(pf.parameters) or "none"
            raise JobFileError(
                f"--param {pair!r}: give NAME=VALUE for a parameter the pipeline declares ({known})"
            )
        out[name] = _typed(name, text, pf.parameters[name])
    return out


def _typed(name: str, text: str, default: ParamValue) -> ParamValue:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = type(default).__name__
        raise JobFileError(
            f"--param {name}={text}: {name} is a {kind} (its default is {default!r})"
        ) from None
    return text


def schema() -> str:
    """``docs/pipeline.schema.json``: the JSON Schema of :class:`PipelineFile`."""
    return jobfile.schema(
        PipelineFile, "Sortie pipeline file (sortie pipeline submit -f pipeline.yml)"
    )


if __name__ == "__main__":
    print(schema(), end="")
