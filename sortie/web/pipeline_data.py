"""What the pipeline views show, as plain data: a pipeline's row in the list, its graph laid
out in layers, its steps' rows (state, run, reuse, which part of the key changed, why it was
skipped or failed) and its parameters. Pure: run records in, JSON-ready dicts out.

A pipeline is a run with ``RunRecord.pipeline`` set; its steps' statuses are on that record
(``Pipeline.steps``: ``proto/pipelines.py``), and each step that ran is a child run
(``parent_id`` the pipeline, ``RunRecord.step`` its name). A reused step's ``run_id`` is the
earlier run whose outputs it took (of another pipeline run, as a rule). The scheduler's
pipeline controller decides all of it; this module only shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto.states import TERMINAL

# what the list's counts are called, per step state (every StepState has one)
COUNTED: dict[p.StepState, str] = {
    p.StepState.COMPLETED: "completed",
    p.StepState.REUSED: "reused",
    p.StepState.FAILED: "failed",
    p.StepState.SKIPPED: "skipped",
    p.StepState.CANCELED: "canceled",
    p.StepState.RUNNING: "running",
    p.StepState.WAITING: "waiting",
}


def status_of(pipe: p.Pipeline, name: str) -> p.StepStatus:
    """A step's status (a step the record does not name yet is waiting)."""
    return pipe.steps.get(name) or p.StepStatus()


def counts(pipe: p.Pipeline) -> dict[str, int]:
    """How many steps are in each state, and ``total``."""
    out = dict.fromkeys(COUNTED.values(), 0)
    for step in pipe.spec.steps:
        out[COUNTED[status_of(pipe, step.name).state]] += 1
    out["total"] = len(pipe.spec.steps)
    return out


def summary(rec: m.RunRecord) -> dict[str, Any]:
    """A pipeline run as the pipelines list shows it (and the pipeline page's header, live)."""
    assert rec.pipeline is not None, f"run {rec.run_id} is not a pipeline"
    pipe = rec.pipeline
    started = rec.started_at or rec.created_at
    return {
        "run_id": rec.run_id,
        "name": pipe.spec.name,
        "description": pipe.spec.description,
        "experiment": rec.spec.experiment,
        "state": str(rec.state),
        "terminal": rec.state in TERMINAL,
        "cancel_requested": rec.cancel_requested,
        "steps": counts(pipe),
        "regenerate_outputs": pipe.regenerate_outputs,
        "rerun_of": pipe.rerun_of,
        "error": None if rec.error is None else rec.error.message,
        "created_at": rec.created_at,
        "started_at": started,
        "ended_at": rec.ended_at,
        "duration_s": None if rec.ended_at is None else max(0.0, rec.ended_at - started),
    }


# --- the graph -------------------------------------------------------------------------------


def edges(spec: p.PipelineSpec) -> list[dict[str, Any]]:
    """One edge per (upstream, downstream) pair, in the spec's order: the PipelineData that
    flows along it (``data``) and whether a ``run_after`` names it. An input nobody produces
    has no edge (validation refuses such a pipeline before it is stored)."""
    producer = {out: s.name for s in spec.steps for out in s.outputs}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for step in spec.steps:
        for data in step.inputs:
            if data in producer:
                edge = found.setdefault(
                    (producer[data], step.name),
                    {"from": producer[data], "to": step.name, "data": [], "run_after": False},
                )
                edge["data"].append(data)
        for before in step.run_after:
            edge = found.setdefault(
                (before, step.name),
                {"from": before, "to": step.name, "data": [], "run_after": False},
            )
            edge["run_after"] = True
    return list(found.values())


def layers(spec: p.PipelineSpec, links: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Each step's layer: 0 for a step that depends on none, else one past its deepest
    upstream step. Steps on a cycle (which validation refuses) go one past the rest."""
    names = [s.name for s in spec.steps]
    upstream: dict[str, list[str]] = {n: [] for n in names}
    for e in links:
        if e["to"] in upstream and e["from"] in upstream:
            upstream[e["to"]].append(e["from"])
    layer: dict[str, int] = {}
    while len(layer) < len(names):
        ready = [n for n in names if n not in layer and all(u in layer for u in upstream[n])]
        if not ready:  # a cycle: place what is left after everything placed
            last = max(layer.values(), default=-1) + 1
            return {**layer, **{n: last for n in names if n not in layer}}
        for n in ready:
            layer[n] = 1 + max((layer[u] for u in upstream[n]), default=-1)
    return layer


def slots(
    names: Sequence[str], layer: Mapping[str, int], links: Sequence[dict[str, Any]]
) -> dict[str, int]:
    """Each step's place in its layer: by the mean place of its upstream steps (fewer edges
    cross), then the spec's order."""
    upstream: dict[str, list[str]] = {n: [] for n in names}
    for e in links:
        if e["to"] in upstream:
            upstream[e["to"]].append(e["from"])
    slot: dict[str, int] = {}
    order = {n: i for i, n in enumerate(names)}
    for depth in range(max(layer.values(), default=-1) + 1):
        here = [n for n in names if layer[n] == depth]

        def key(n: str) -> tuple[float, int]:
            placed = [slot[u] for u in upstream[n] if u in slot]
            return (sum(placed) / len(placed) if placed else -1.0, order[n])

        for i, n in enumerate(sorted(here, key=key)):
            slot[n] = i
    return slot


def graph(pipe: p.Pipeline) -> dict[str, Any]:
    """The steps as boxes (``layer``: the column, ``slot``: the row in it, ``state``) and the
    edges between them; ``layers`` and ``width`` (the most steps in one layer) size it."""
    names = [s.name for s in pipe.spec.steps]
    links = edges(pipe.spec)
    layer = layers(pipe.spec, links)
    slot = slots(names, layer, links)
    nodes = [
        {
            "name": n,
            "layer": layer[n],
            "slot": slot[n],
            "state": str(status_of(pipe, n).state),
        }
        for n in names
    ]
    return {
        "nodes": nodes,
        "edges": links,
        "layers": max(layer.values(), default=-1) + 1,
        "width": max((s + 1 for s in slot.values()), default=0),
    }


# --- the steps -------------------------------------------------------------------------------


def why_ran(status: p.StepStatus) -> str | None:
    """Why a step ran rather than being reused, with the parts of its key that changed since
    its last run ("key changed; changed: script, inputs.prepped"); None: it did not run."""
    if status.state in (p.StepState.REUSED, p.StepState.WAITING, p.StepState.SKIPPED):
        return None
    parts = [status.ran_because] if status.ran_because else []
    if status.changed:
        parts.append("changed: " + ", ".join(status.changed))
    elif status.changed == [] and status.ran_because not in (None, "key changed"):
        parts.append("key unchanged")
    return "; ".join(parts) or None


def step_row(
    step: p.StepSpec,
    status: p.StepStatus,
    run: m.RunRecord | None,
    layer: int,
) -> dict[str, Any]:
    """A step as the pipeline page's table shows it. ``run``: the record of ``status.run_id``
    (its own run, or the reused one), when there is one."""
    reused = status.state is p.StepState.REUSED
    return {
        "name": step.name,
        "layer": layer,
        "state": str(status.state),
        "run_id": status.run_id,
        "run_state": None if run is None else str(run.state),
        # a reused step's run is the earlier one whose outputs it took, and its pipeline
        "reused_from": status.run_id if reused else None,
        "reused_pipeline": run.parent_id if reused and run is not None else None,
        "target": step.run.target,
        "script": step.run.script,
        "inputs": list(step.inputs),
        "outputs": list(step.outputs),
        "run_after": list(step.run_after),
        "allow_reuse": step.allow_reuse,
        "changed": status.changed,
        "ran_because": status.ran_because,
        "why_ran": why_ran(status),
        "reason": status.reason,
        "error": None if run is None or run.error is None or reused else run.error.message,
        "started_at": None if run is None or reused else run.started_at,
        "ended_at": None if run is None or reused else run.ended_at,
    }


def step_rows(pipe: p.Pipeline, runs: Sequence[m.RunRecord]) -> list[dict[str, Any]]:
    """Every step in the spec's order, each with its run's record where one was read."""
    by_id = {r.run_id: r for r in runs}
    layer = layers(pipe.spec, edges(pipe.spec))
    rows = []
    for step in pipe.spec.steps:
        status = status_of(pipe, step.name)
        run = by_id.get(status.run_id) if status.run_id else None
        rows.append(step_row(step, status, run, layer[step.name]))
    return rows


def run_ids(pipe: p.Pipeline) -> list[str]:
    """The runs the page reads: each step's (its own, or the one it reused)."""
    return [s.run_id for s in (status_of(pipe, x.name) for x in pipe.spec.steps) if s.run_id]


def step_run(rec: m.RunRecord) -> dict[str, Any]:
    """A step's run as it changes (the page redraws the step's run state from it)."""
    return {
        "run_id": rec.run_id,
        "step": rec.step,
        "run_state": str(rec.state),
        "terminal": rec.state in TERMINAL,
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
        "error": None if rec.error is None else rec.error.message,
    }


def parameters(pipe: p.Pipeline) -> list[dict[str, Any]]:
    """Each PipelineParameter: the value this run used, its default, whether it was set."""
    names = list(dict.fromkeys([*pipe.spec.parameters, *pipe.parameters]))
    out = []
    for name in names:
        default = pipe.spec.parameters.get(name)
        value = pipe.parameters.get(name, default)
        out.append({"name": name, "value": value, "default": default, "set": value != default})
    return out


def detail(rec: m.RunRecord, runs: Sequence[m.RunRecord]) -> dict[str, Any]:
    """What the pipeline page draws: its header, graph, steps and parameters."""
    assert rec.pipeline is not None, f"run {rec.run_id} is not a pipeline"
    return {
        "pipeline": summary(rec),
        "graph": graph(rec.pipeline),
        "steps": step_rows(rec.pipeline, runs),
        "parameters": parameters(rec.pipeline),
    }
