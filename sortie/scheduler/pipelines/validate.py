"""Checks on a submitted pipeline: what is wrong with it, said so a person can fix it. Pure.

The first problem found is reported, in this order: the steps (none, too many, bad or
repeated names), the parameters (bad names, values for undeclared ones, values of the wrong
type), each step's data (bad or repeated names, reading its own output), the graph (two
producers of one output, an input nobody produces, a run_after naming no step), the tokens in
each step's arguments, and last a cycle (named: "a -> b -> a").
"""

from __future__ import annotations

from collections.abc import Iterable

from sortie.proto.pipelines import (
    MAX_STEPS,
    NAME_RE,
    ParamValue,
    PipelineRequest,
    PipelineSpec,
    StepSpec,
    data_names,
    data_token,
    param_names,
    param_token,
)
from sortie.scheduler.pipelines import dag as graph

_NAME_RULE = "a letter, then up to 62 letters, digits, '_' or '-'"


def problem(request: PipelineRequest) -> str | None:
    """What is wrong (no steps, more than MAX_STEPS, a bad or repeated step name, a cycle
    (naming its steps), an input nobody produces, two producers of one output, a run_after
    naming no step, a data token for data the step neither reads nor writes, a parameter
    token or a value for a parameter the pipeline does not declare, ...), or None."""
    spec = request.spec
    return (
        _steps_problem(spec)
        or _parameters_problem(spec, request.parameters)
        or _first(_data_problem(s) for s in spec.steps)
        or _graph_problem(spec)
        or _first(_tokens_problem(s, spec.parameters) for s in spec.steps)
        or _cycle_problem(spec)
    )


def _first(problems: Iterable[str | None]) -> str | None:
    return next((p for p in problems if p is not None), None)


def _steps_problem(spec: PipelineSpec) -> str | None:
    if not spec.steps:
        return "the pipeline has no steps: give at least one step"
    if len(spec.steps) > MAX_STEPS:
        return (
            f"the pipeline has {len(spec.steps):,} steps: give {MAX_STEPS:,} or fewer (split"
            " it into pipelines)"
        )
    seen: set[str] = set()
    for step in spec.steps:
        if not NAME_RE.fullmatch(step.name):
            return f"step name {step.name!r} is not valid: use {_NAME_RULE}"
        if step.name in seen:
            return f"two steps are named {step.name!r}: give each step its own name"
        seen.add(step.name)
    return None


def _parameters_problem(spec: PipelineSpec, values: dict[str, ParamValue]) -> str | None:
    for name in spec.parameters:
        if not NAME_RE.fullmatch(name):
            return f"parameter name {name!r} is not valid: use {_NAME_RULE}"
    for name, value in values.items():
        if name not in spec.parameters:
            declared = ", ".join(repr(n) for n in spec.parameters) or "none"
            return (
                f"a value is given for parameter {name!r}, which the pipeline does not"
                f" declare (declared: {declared}): declare it (PipelineParameter) or drop"
                " the value"
            )
        default = spec.parameters[name]
        if not _same_type(default, value):
            kind = type(default).__name__
            return (
                f"parameter {name!r} is given {value!r} ({type(value).__name__}), but its"
                f" default {default!r} is a {kind}: give a {kind}"
            )
    return None


def _same_type(default: ParamValue, value: ParamValue) -> bool:
    """A value of the default's type (an int is taken where the default is a float; a bool
    is not an int here, though Python says it is)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return type(value) is type(default)


def _data_problem(step: StepSpec) -> str | None:
    for kind, names in (("input", step.inputs), ("output", step.outputs)):
        seen: set[str] = set()
        for name in names:
            if not NAME_RE.fullmatch(name):
                return f"step {step.name!r}: {kind} name {name!r} is not valid: use {_NAME_RULE}"
            if name in seen:
                return f"step {step.name!r} lists {kind} {name!r} twice: list it once"
            seen.add(name)
    own = [n for n in step.inputs if n in step.outputs]
    if own:
        return (
            f"step {step.name!r} reads its own output {own[0]!r}: a step's inputs come from"
            " other steps; give the output another name or read it in a later step"
        )
    return None


def _graph_problem(spec: PipelineSpec) -> str | None:
    producer: dict[str, str] = {}
    for step in spec.steps:
        for name in step.outputs:
            if name in producer:
                return (
                    f"steps {producer[name]!r} and {step.name!r} both write {name!r}: a"
                    " PipelineData has one producer; give one of them another output"
                )
            producer[name] = step.name
    names = {s.name for s in spec.steps}
    for step in spec.steps:
        for name in step.inputs:
            if name not in producer:
                return (
                    f"step {step.name!r} reads {name!r}, which no step writes: add it to"
                    " the outputs of the step that makes it, or remove the input"
                )
        for name in step.run_after:
            if name not in names:
                return (
                    f"step {step.name!r} runs after {name!r}, which is no step of this"
                    " pipeline: name one of its steps or remove it from run_after"
                )
    return None


def _tokens_problem(step: StepSpec, declared: dict[str, ParamValue]) -> str | None:
    arguments = step.run.arguments
    for name in data_names(arguments):
        if name not in step.inputs and name not in step.outputs:
            return (
                f"step {step.name!r}: an argument holds {data_token(name)}, but the step"
                f" neither reads nor writes {name!r}: add it to the step's inputs or"
                " outputs, or remove it from the arguments"
            )
    for name in param_names(arguments):
        if name not in declared:
            return (
                f"step {step.name!r}: an argument holds {param_token(name)}, but the"
                f" pipeline declares no parameter {name!r}: declare it (PipelineParameter"
                " with a default value) or remove it from the arguments"
            )
    return None


def _cycle_problem(spec: PipelineSpec) -> str | None:
    found = graph.cycle(graph.build(spec))
    if found is None:
        return None
    return (
        f"the steps form a cycle: {' -> '.join(found)} (each needs the one before it, by"
        " its inputs or run_after): remove one of those inputs or run_after entries"
    )
