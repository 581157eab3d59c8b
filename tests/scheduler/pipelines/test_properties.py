"""Hypothesis properties of the pipeline controller on random DAGs with random run outcomes,
random completion orders, a cache from an earlier run (some steps edited since) and a
cancel at a random moment: a step never starts (runs or is reused) before every step it
needs succeeded; every step ends in exactly one terminal state, through the lifecycle's
table; no step is submitted twice, even when the scheduler stops between writing a plan's
runs and its statuses; the same inputs give the same plan; the pipeline's end agrees with its
steps."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.proto.pipelines import (
    STEP_SUCCEEDED,
    STEP_TERMINAL,
    PipelineSpec,
    StepState,
    step_transition,
)
from sortie.proto.states import RunState
from sortie.scheduler.pipelines.controller import PipelinePlan, pipeline_step
from sortie.scheduler.pipelines.dag import build, upstream
from tests.scheduler.pipelines.builders import Outcome, SimPipeline, pipeline, step

_DONE: Outcome = "completed"
OUTCOMES: list[Outcome] = [_DONE] * 6 + ["failed", "canceled", "no-output"]


@st.composite
def dags(draw: st.DrawFn) -> PipelineSpec:
    """1 to 10 steps; step i writes d{i} (most do), reads some earlier data and runs after
    some earlier steps: a DAG by construction."""
    n = draw(st.integers(1, 10))
    steps = []
    written: list[str] = []
    for i in range(n):
        inputs = (
            draw(st.lists(st.sampled_from(written), unique=True, max_size=3)) if written else []
        )
        after = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=2)) if i else []
        outputs = [f"d{i}"] if draw(st.integers(0, 4)) else []
        written += outputs
        steps.append(
            step(
                f"s{i}",
                inputs,
                outputs,
                run_after=[f"s{j}" for j in after],
                allow_reuse=draw(st.integers(0, 5)) > 0,
            )
        )
    return pipeline(*steps)


class Checked(SimPipeline):
    """Every call made twice (same plan), and every step started only after its needs."""

    def decide(self, *args: Any) -> PipelinePlan:
        plan = pipeline_step(*args)
        assert plan == pipeline_step(*args)
        after = {n: s.state for n, s in self.statuses.items()}
        after.update({n: s.state for n, s in plan.statuses.items()})
        dag = build(self.spec)
        for name, status in plan.statuses.items():
            started = status.state in (StepState.RUNNING, StepState.REUSED)
            if started and self.statuses[name].state is StepState.WAITING:
                assert all(after[u] in STEP_SUCCEEDED for u in upstream(dag, name)), name
        return plan


def _edited(spec: PipelineSpec, which: set[int]) -> PipelineSpec:
    steps = [
        msgspec.structs.replace(
            s, run=msgspec.structs.replace(s.run, snapshot_id=s.run.snapshot_id + "-v2")
        )
        if i in which
        else s
        for i, s in enumerate(spec.steps)
    ]
    return msgspec.structs.replace(spec, steps=steps)


@settings(max_examples=150, deadline=None)
@given(spec=dags(), data=st.data())
def test_random_pipelines(spec: PipelineSpec, data: st.DataObject) -> None:
    cache = {}
    if data.draw(st.booleans(), label="ran before"):
        first = SimPipeline(spec)
        first.run()
        cache = dict(first.cache)
        edits = data.draw(st.sets(st.integers(0, len(spec.steps) - 1)), label="edited")
        spec = _edited(spec, edits)
    outcome = {s.name: data.draw(st.sampled_from(OUTCOMES), label=s.name) for s in spec.steps}
    sim = Checked(
        spec,
        outcome=outcome.__getitem__,
        cache=cache,
        run_id="pr2",
        regenerate=data.draw(st.integers(0, 5), label="regenerate") == 0,
    )
    cancel_at = data.draw(st.integers(0, 40), label="cancel at call")
    plan = None
    restarts = 0
    for call in range(200):
        sim.cancel = sim.cancel or call == cancel_at
        if restarts < 3 and data.draw(st.integers(0, 5), label="restart") == 0:
            restarts += 1
            sim.step(record=False)  # runs written, then the scheduler stopped
        plan = sim.step()
        if plan.done is not None:
            break
        live = sim.running()
        assert live, "not done, yet nothing runs: the pipeline is stuck"
        ended = data.draw(st.lists(st.sampled_from(live), min_size=1, unique=True), label="end")
        sim.finish(ended)
    assert plan is not None and plan.done is not None
    _check_end(sim, plan)


def _check_end(sim: SimPipeline, plan: PipelinePlan) -> None:
    dag = build(sim.spec)
    names = [s.name for s in sim.submitted]
    assert len(names) == len(set(names)), "a step was submitted twice"
    assert len({s.run_id for s in sim.submitted}) == len(names)
    for name, states in sim.history.items():
        for old, new in itertools.pairwise(states):
            step_transition(old, new)  # every move is in the table
        assert [s for s in states if s in STEP_TERMINAL] == [states[-1]], (name, states)
    final = sim.states()
    for name, state in final.items():
        if state is StepState.SKIPPED:
            assert any(
                final[u] in (StepState.FAILED, StepState.CANCELED) for u in upstream(dag, name)
            )
        if state is StepState.COMPLETED:
            assert name in names
    if all(s in STEP_SUCCEEDED for s in final.values()):
        assert plan.done is RunState.COMPLETED
    elif sim.cancel:
        assert plan.done is RunState.CANCELED
    else:
        assert plan.done is RunState.FAILED
        assert plan.reason
