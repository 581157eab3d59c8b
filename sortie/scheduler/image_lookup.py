"""Which image each tagged container step of a submitted pipeline names (shell): the daemon
asks, before the core accepts the pipeline, one live agent of each step's target that runs
containers (``ImageQuery`` on ``subjects.agent_images``), and the answers go on the
pipeline's record (``Pipeline.images``), where the controller keys the steps on them.

Images are local to agent hosts (no registry): the scheduler has no engine of its own. A
reference pinned by digest (``pipelines.pinned``) is not asked about. Every question is
asked at once and waited for at most ``LOOKUP_TIMEOUT_S``; a step whose target has no such
agent, or whose agent does not answer in time, gets an ``ImageLookup`` saying why (the
controller runs it rather than reuse anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterable

import nats.errors
from nats.aio.client import Client as NATS

from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.scheduler.model import AgentView

LOOKUP_TIMEOUT_S = 5.0  # the longest a pipeline's submit waits for the agents' answers
NO_RESPONDERS = "503"  # the broker's status reply when no one listens on the subject


def asker(agents: Iterable[AgentView], target: str) -> AgentView | None:
    """The agent to ask about an image of ``target`` (pure): a live one that runs
    containers, the one heard from last."""
    able = [
        a
        for a in agents
        if a.target == target and not a.lost and a.confirmed and a.container_engine is not None
    ]
    return max(able, key=lambda a: (a.last_seen, a.agent_id), default=None)


def tagged_steps(spec: p.PipelineSpec) -> dict[str, tuple[str, str]]:
    """Step name -> (target, reference) for each container step whose image is a tag."""
    out: dict[str, tuple[str, str]] = {}
    for step in spec.steps:
        docker = step.run.environment.docker
        if docker.enabled and docker.base_image and not p.pinned(docker.base_image):
            out[step.name] = (step.run.target, docker.base_image)
    return out


def lookup_of(answer: m.ImageAnswer | str, agent_id: str) -> p.ImageLookup:
    """What the record keeps of an agent's answer (or of why there was none) (pure)."""
    match answer:
        case m.ImageFound(image_id=image_id):
            return p.ImageLookup(image_id=image_id)
        case m.ImageAbsent():
            return p.ImageLookup(problem=f"agent {agent_id} has no such image")
        case m.ImageLookupFailed(error=error):
            return p.ImageLookup(problem=f"agent {agent_id} could not look it up: {error}")
        case str():
            return p.ImageLookup(problem=answer)


async def ask(nc: NATS, agent_id: str, reference: str, timeout_s: float) -> m.ImageAnswer | str:
    """One agent's answer about ``reference``, or why there is none."""
    reply = subjects.image_answer(agent_id, secrets.token_hex(8))
    sub = await nc.subscribe(reply, max_msgs=1)
    try:
        query = codec.encode(m.ImageQuery(reference=reference))
        await nc.publish(subjects.agent_images(agent_id), query, reply=reply)
        msg = await sub.next_msg(timeout=timeout_s)
    except nats.errors.TimeoutError:
        return f"agent {agent_id} did not answer within {timeout_s:g} s"
    except nats.errors.Error as exc:  # the broker link failed meanwhile
        return f"agent {agent_id} could not be asked: {exc!r}"
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:  # nobody subscribed
        return f"agent {agent_id} is not connected"
    try:
        answer: m.ImageAnswer = codec.decode(m.ImageAnswer, msg.data)
    except codec.BadMessage as exc:
        return f"agent {agent_id} answered something unreadable: {exc}"
    if answer.reference != reference:
        return f"agent {agent_id} answered about another reference"
    return answer


async def look_up(
    nc: NATS,
    agents: Iterable[AgentView],
    spec: p.PipelineSpec,
    timeout_s: float = LOOKUP_TIMEOUT_S,
) -> dict[str, p.ImageLookup]:
    """Each tagged container step's ``ImageLookup``, by step name (each distinct target and
    reference asked once, all at once)."""
    steps = tagged_steps(spec)
    agents = list(agents)
    asked: dict[tuple[str, str], tuple[str, asyncio.Task[m.ImageAnswer | str]]] = {}
    found: dict[tuple[str, str], p.ImageLookup] = {}
    for target, reference in dict.fromkeys(steps.values()):
        agent = asker(agents, target)
        if agent is None:
            why = f"no live agent of target {target!r} that runs containers to ask"
            found[(target, reference)] = p.ImageLookup(problem=why)
        else:
            task = asyncio.ensure_future(ask(nc, agent.agent_id, reference, timeout_s))
            asked[(target, reference)] = (agent.agent_id, task)
    if asked:
        await asyncio.wait([task for _, task in asked.values()])
    for where, (agent_id, task) in asked.items():
        found[where] = lookup_of(task.result(), agent_id)
    return {name: found[where] for name, where in steps.items()}
