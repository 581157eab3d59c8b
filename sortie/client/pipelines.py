"""Pipelines in the SDK: ``PipelineData``, ``PipelineParameter``, ``PythonScriptStep`` and
``Pipeline``, with the names, signatures and defaults of the hosted platform's SDK v1
(``azureml.pipeline.core`` and ``azureml.pipeline.steps``), converted to the client's
``StepConfig``s (``client/pipeline_submit.py``) when the pipeline is submitted.

    prepared = PipelineData("prepared")
    lr = PipelineParameter("lr", default_value=0.1)
    prep = PythonScriptStep("prep.py", name="prep", arguments=["--out", prepared],
                            outputs=[prepared], source_directory="steps", compute_target="cpu")
    train = PythonScriptStep("train.py", name="train", arguments=["--data", prepared, "--lr", lr],
                             inputs=[prepared], source_directory="steps", compute_target="gpu")
    run = Experiment(ws, "digits").submit(Pipeline(ws, [prep, train]))  # a PipelineRun
    run.wait_for_completion()

A ``PipelineData`` in a step's arguments is the directory's local path when the step runs;
a ``PipelineParameter`` is its value for that submission. The graph comes from the steps'
inputs and outputs (and ``run_after``); the scheduler checks it (``validate()`` asks it
without submitting). Unknown attribute names are refused (``strict.Strict``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sortie.client.pipeline_submit import PipelineOptions, StepConfig
from sortie.client.runconfig import NamedTarget, RunConfiguration, ScriptRunConfig
from sortie.client.strict import Strict
from sortie.proto import pipelines as p

if TYPE_CHECKING:
    from sortie.client.sdk import Workspace

__all__ = [
    "Pipeline",
    "PipelineConfigError",
    "PipelineData",
    "PipelineParameter",
    "PythonScriptStep",
]


class PipelineConfigError(ValueError):
    """A pipeline object that cannot be used as given; the message says what to change."""


def _name(what: str, name: object) -> str:
    if not isinstance(name, str) or not p.NAME_RE.match(name):
        raise PipelineConfigError(
            f"{what} name {name!r}: give a letter, then up to 62 letters, digits, '_' or '-'"
        )
    return name


class PipelineData(Strict):
    """A directory one step writes (its ``outputs``) and later steps read (their
    ``inputs``). In a step's arguments it stands for the directory's local path. v1's
    ``datastore``, ``output_mode`` and the rest are accepted and have no effect: the data is
    stored content-addressed in Sortie's object store and laid out for each reader."""

    __slots__ = ("_name", "_producer")

    def __init__(  # noqa: PLR0913, PLR0917  # Azure ML v1's signature
        self,
        name: str,
        datastore: Any = None,
        output_name: str | None = None,
        output_mode: str = "mount",
        output_path_on_compute: str | None = None,
        output_overwrite: bool | None = None,
        data_type: str | None = None,
        is_directory: bool | None = None,
        pipeline_output_name: str | None = None,
        training_output: Any = None,
    ) -> None:
        self._name = _name("PipelineData", output_name or name)
        self._producer: PythonScriptStep | None = None

    @property
    def name(self) -> str:
        return self._name

    def __str__(self) -> str:
        return p.data_token(self._name)

    def __repr__(self) -> str:
        return f"PipelineData(name={self._name!r})"


class PipelineParameter(Strict):
    """A value given when the pipeline is submitted (``pipeline_parameters={name: value}``),
    else ``default_value``. In a step's arguments it stands for the value."""

    __slots__ = ("_default", "_name")

    def __init__(self, name: str, default_value: p.ParamValue) -> None:
        self._name = _name("PipelineParameter", name)
        if not isinstance(default_value, str | int | float | bool):
            raise PipelineConfigError(
                f"PipelineParameter {name!r}: default_value must be a string, number or bool, "
                f"got {type(default_value).__name__}"
            )
        self._default = default_value

    @property
    def name(self) -> str:
        return self._name

    @property
    def default_value(self) -> p.ParamValue:
        return self._default

    def __str__(self) -> str:
        return p.param_token(self._name)

    def __repr__(self) -> str:
        return f"PipelineParameter(name={self._name!r}, default_value={self._default!r})"


def _step_name(name: str | None, script_name: str) -> str:
    """v1 names an unnamed step by its script; here a step's name is also its run id's
    suffix, so the script's stem with other characters as '_'."""
    if name is not None:
        return _name("PythonScriptStep", name)
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(script_name).stem)[:63]
    return _name("PythonScriptStep", stem if stem[:1].isalpha() else f"step_{stem}"[:63])


def _datas(what: str, items: object) -> list[PipelineData]:
    given = list(items) if isinstance(items, list | tuple) else [items] if items else []
    out: list[PipelineData] = []
    for item in given:
        if not isinstance(item, PipelineData):
            raise PipelineConfigError(
                f"PythonScriptStep {what}: give PipelineData objects, got {item!r}"
            )
        out.append(item)
    return out


class PythonScriptStep(Strict):
    """A step that runs a Python script: v1's signature. ``compute_target`` (a name or a
    ``ComputeTarget``) overrides ``runconfig``'s target; ``params`` reach the script as
    environment variables ``AML_PARAMETER_<name>`` (as in v1). ``runconfig_pipeline_params``
    is refused; ``version`` and ``hash_paths`` are accepted and have no effect (every file
    of the source directory counts for reuse)."""

    __slots__ = (
        "_after",
        "allow_reuse",
        "arguments",
        "compute_target",
        "inputs",
        "name",
        "outputs",
        "params",
        "runconfig",
        "script_name",
        "source_directory",
    )

    def __init__(  # noqa: PLR0913, PLR0917  # Azure ML v1's signature
        self,
        script_name: str,
        name: str | None = None,
        arguments: Sequence[Any] | None = None,
        compute_target: str | NamedTarget | tuple[str, str] | None = None,
        runconfig: RunConfiguration | None = None,
        runconfig_pipeline_params: dict[str, Any] | None = None,
        inputs: Sequence[PipelineData] | None = None,
        outputs: Sequence[PipelineData] | None = None,
        params: dict[str, Any] | None = None,
        source_directory: str | Path | None = None,
        allow_reuse: bool = True,
        version: str | None = None,
        hash_paths: list[str] | None = None,
    ) -> None:
        if runconfig_pipeline_params:
            raise PipelineConfigError(
                "PythonScriptStep(runconfig_pipeline_params=...) is not supported by Sortie: "
                "set the run configuration's values directly"
            )
        if not isinstance(script_name, str) or not script_name:
            raise PipelineConfigError("PythonScriptStep needs script_name: the script to run")
        if runconfig is not None and not isinstance(runconfig, RunConfiguration):
            raise PipelineConfigError(
                f"PythonScriptStep runconfig: give a RunConfiguration, got {runconfig!r}"
            )
        self.script_name = script_name
        self.name = _step_name(name, script_name)
        self.arguments = list(arguments or [])
        self.compute_target = compute_target
        self.runconfig = runconfig
        self.inputs = _datas("inputs", inputs)
        self.outputs = _datas("outputs", outputs)
        self.params = dict(params or {})
        self.source_directory = source_directory
        self.allow_reuse = bool(allow_reuse)
        self._after: list[PythonScriptStep] = []
        for data in self.outputs:
            data._producer = self  # resolve_closure brings producers in

    def __repr__(self) -> str:
        return f"PythonScriptStep(name={self.name!r}, script_name={self.script_name!r})"

    def run_after(self, step: PythonScriptStep) -> None:
        """Run this step only after ``step`` succeeded, though no data links them."""
        if not isinstance(step, PythonScriptStep):
            raise PipelineConfigError(f"run_after takes a PythonScriptStep, got {step!r}")
        self._after.append(step)

    def _target(self) -> str | NamedTarget | None:
        target = self.compute_target
        if isinstance(target, tuple):  # v1's ("name", "type") form
            return str(target[0])
        return target

    def _environment(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in self.params.items():
            if isinstance(value, PipelineParameter | PipelineData):
                raise PipelineConfigError(
                    f"step {self.name!r}: params[{key!r}] is a {type(value).__name__}: put it "
                    "in the step's arguments (params are fixed environment variables)"
                )
            out[f"AML_PARAMETER_{key}"] = str(value)
        return out

    def to_config(self, default_source_directory: str | Path | None = None) -> StepConfig:
        """The step as the client submits it."""
        rc = self.runconfig or RunConfiguration()
        if self.params:
            rc = _with_env(rc, self._environment())
        source = self.source_directory or default_source_directory or "."
        return StepConfig(
            name=self.name,
            config=ScriptRunConfig(
                source_directory=source,
                script=self.script_name,
                arguments=[str(a) for a in self.arguments],
                run_config=rc,
                compute_target=self._target(),
            ),
            inputs=[d.name for d in self.inputs],
            outputs=[d.name for d in self.outputs],
            run_after=[s.name for s in self._after],
            allow_reuse=self.allow_reuse,
        )


def _with_env(rc: RunConfiguration, env: dict[str, str]) -> RunConfiguration:
    from dataclasses import replace

    return replace(rc, environment_variables={**env, **rc.environment_variables})


def _closure(steps: Iterable[PythonScriptStep]) -> list[PythonScriptStep]:
    """The steps, then (v1's ``resolve_closure``) the steps they depend on that were not
    given: the producers of their inputs and their ``run_after`` steps."""
    out: list[PythonScriptStep] = []
    seen: set[int] = set()
    todo = list(steps)
    while todo:
        step = todo.pop(0)
        if id(step) in seen:
            continue
        seen.add(id(step))
        out.append(step)
        todo += [d._producer for d in step.inputs if d._producer is not None]
        todo += step._after
    return out


def _parameters(steps: Iterable[PythonScriptStep]) -> dict[str, p.ParamValue]:
    """The PipelineParameters the steps' arguments hold, by name (one default per name)."""
    found: dict[str, p.ParamValue] = {}
    for step in steps:
        for arg in step.arguments:
            if not isinstance(arg, PipelineParameter):
                continue
            if arg.name in found and found[arg.name] != arg.default_value:
                raise PipelineConfigError(
                    f"two PipelineParameters named {arg.name!r} with different defaults "
                    f"({found[arg.name]!r} and {arg.default_value!r}): use one object"
                )
            found[arg.name] = arg.default_value
    return found


@dataclass
class Pipeline(Strict):
    """v1's ``Pipeline(workspace, steps, description=None, default_datastore=None,
    default_source_directory=None, resolve_closure=True)``: steps a step depends on are
    brought in when ``resolve_closure``. Submit it with ``Experiment.submit`` (or
    ``submit(experiment_name)``)."""

    workspace: Workspace
    steps: list[PythonScriptStep]
    description: str | None = None
    default_datastore: Any = None
    default_source_directory: str | Path | None = None
    resolve_closure: bool = True
    name: str | None = None  # Sortie's: shown in lists; with the experiment it keys reuse

    def __post_init__(self) -> None:
        steps = list(self.steps) if isinstance(self.steps, list | tuple) else None
        if not steps or not all(isinstance(s, PythonScriptStep) for s in steps):
            raise PipelineConfigError(
                f"Pipeline(steps=...) takes a list of PythonScriptStep, got {self.steps!r}"
            )
        self.steps = steps

    def all_steps(self) -> list[PythonScriptStep]:
        return _closure(self.steps) if self.resolve_closure else list(self.steps)

    def pipeline_name(self) -> str:
        """Its name: ``name``, else the first step's."""
        return self.name or f"{self.steps[0].name}-pipeline"

    def to_configs(self) -> list[StepConfig]:
        return [s.to_config(self.default_source_directory) for s in self.all_steps()]

    def options(
        self,
        experiment: str,
        *,
        pipeline_parameters: dict[str, Any] | None = None,
        regenerate_outputs: bool = False,
        tags: dict[str, str] | None = None,
        submission_id: str | None = None,
    ) -> PipelineOptions:
        values = dict(pipeline_parameters or {})
        for key, value in values.items():
            if not isinstance(value, str | int | float | bool):
                raise PipelineConfigError(
                    f"pipeline_parameters[{key!r}]: give a string, number or bool, got "
                    f"{type(value).__name__}"
                )
        return PipelineOptions(
            experiment=experiment,
            parameters=_parameters(self.all_steps()),
            values=values,
            regenerate_outputs=bool(regenerate_outputs),
            tags=tags,
            submission_id=submission_id,
            description=self.description or "",
        )

    def validate(self) -> list[str]:
        """What the scheduler would refuse in this pipeline ([] when it would accept it):
        it is sent for checking, not submitted (the source directories are hashed, not
        uploaded)."""
        from sortie.client.client import RequestRefused
        from sortie.client.pipeline_submit import check_pipeline

        ws = self.workspace
        check = check_pipeline(
            ws._client, self.pipeline_name(), self.to_configs(), self.options("default")
        )
        try:
            ws._run(check)
        except RequestRefused as exc:
            return [str(exc)]
        return []

    def submit(
        self,
        experiment_name: str,
        pipeline_parameters: dict[str, Any] | None = None,
        continue_on_step_failure: bool = False,
        regenerate_outputs: bool = False,
        parent_run_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """v1's ``Pipeline.submit``: ``Experiment(workspace, experiment_name).submit(self)``.
        ``continue_on_step_failure`` is refused (independent branches always finish)."""
        if continue_on_step_failure or parent_run_id is not None:
            raise PipelineConfigError(
                "continue_on_step_failure and parent_run_id are not supported by Sortie: "
                "independent branches finish anyway; downstream steps of a failure are skipped"
            )
        from sortie.client.sdk import Experiment

        return Experiment(self.workspace, experiment_name).submit(
            self,
            tags=kwargs.get("tags"),
            pipeline_parameters=pipeline_parameters,
            regenerate_outputs=regenerate_outputs,
        )
