"""The pure parts of asking agents which image a pipeline step's tag names
(``scheduler/image_lookup.py``; the asking itself is tested against a real agent and Podman in
tests/containers/test_image_ids.py): which agent is asked, which steps need asking, and what
the pipeline's record keeps of each answer; and which reply subjects an agent answers on."""

from __future__ import annotations

import dataclasses

import pytest

from sortie.agents.image_ids import own_answer_subject
from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto import subjects
from sortie.scheduler.image_lookup import asker, lookup_of, tagged_steps
from sortie.scheduler.model import AgentView


def agent(agent_id: str, target: str = "gpu", **kw: object) -> AgentView:
    view = AgentView(
        agent_id=agent_id,
        incarnation="i",
        target=target,
        hostname="h",
        capacity=m.Capacity(cpus=1, memory_mb=1),
        first_seen=0.0,
        last_seen=1.0,
        container_engine="podman 4.3.1",
    )
    return dataclasses.replace(view, **kw)  # type: ignore[arg-type]


# (what, the agents, the one asked about an image of target "gpu")
ASKERS = [
    ("the one heard from last", [agent("a", last_seen=1.0), agent("b", last_seen=2.0)], "b"),
    ("not one of another target", [agent("a", target="cpu")], None),
    ("not one without an engine", [agent("a", container_engine=None)], None),
    ("not a lost one", [agent("a", lost=True), agent("b", last_seen=0.5)], "b"),
    ("not one not heard from since a restart", [agent("a", confirmed=False)], None),
    ("none at all", [], None),
]


@pytest.mark.parametrize(("agents", "asked"), [c[1:] for c in ASKERS], ids=[c[0] for c in ASKERS])
def test_which_agent_is_asked(agents: list[AgentView], asked: str | None) -> None:
    found = asker(agents, "gpu")
    assert (None if found is None else found.agent_id) == asked


def step(name: str, image: str | None, enabled: bool = True) -> p.StepSpec:
    env = m.Environment(docker=m.DockerSection(enabled=enabled, base_image=image))
    run = m.RunSpec(experiment="e", script="t.py", snapshot_id="s", target="gpu", environment=env)
    return p.StepSpec(name=name, run=run)


def test_only_tagged_container_steps_are_asked_about() -> None:
    spec = p.PipelineSpec(
        name="pipe",
        steps=[
            step("tagged", "trainer:latest"),
            step("pinned", "trainer@sha256:" + "a" * 64),
            step("off", "trainer:latest", enabled=False),
            step("none", None),
        ],
    )
    assert tagged_steps(spec) == {"tagged": ("gpu", "trainer:latest")}


ANSWERS: list[tuple[str, m.ImageAnswer | str, p.ImageLookup]] = [
    ("found", m.ImageFound(reference="r", image_id="sha256:1"), p.ImageLookup(image_id="sha256:1")),
    ("absent", m.ImageAbsent(reference="r"), p.ImageLookup(problem="agent a1 has no such image")),
    (
        "engine failed",
        m.ImageLookupFailed(reference="r", error="engine down"),
        p.ImageLookup(problem="agent a1 could not look it up: engine down"),
    ),
    (
        "no answer",
        "agent a1 did not answer within 5 s",
        p.ImageLookup(problem="agent a1 did not answer within 5 s"),
    ),
]


@pytest.mark.parametrize(("answer", "kept"), [c[1:] for c in ANSWERS], ids=[c[0] for c in ANSWERS])
def test_what_the_record_keeps_of_an_answer(
    answer: m.ImageAnswer | str, kept: p.ImageLookup
) -> None:
    assert lookup_of(answer, "a1") == kept


@pytest.mark.parametrize(
    ("reply", "answers"),
    [
        (subjects.image_answer("a1", "q1"), True),
        (subjects.image_answer("a2", "q1"), False),  # another agent's
        (f"{subjects.PREFIX}.images.a1.q1.more", False),
        (f"{subjects.PREFIX}.images.a1.", False),
        (f"{subjects.SCHEDULER_INBOX}.x", False),  # a reply subject it may not publish to
        ("", False),
    ],
)
def test_an_agent_answers_only_on_its_own_answer_subjects(reply: str, answers: bool) -> None:
    assert own_answer_subject("a1", reply) is answers
