"""Which image a reference names on this agent's engine: the agent's answer to the
scheduler's ``ImageQuery`` (a pipeline's container step whose image is a tag is keyed on the
image ID, so a tag re-pointed to another image is not reused).

Images are local to the agent host (no registry): the engine's inspection of the reference
gives its ID; an image the engine lacks is ``ImageAbsent``, not an error; an engine that
does not answer in time, or refuses, is ``ImageLookupFailed`` with what it said.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiodocker

from sortie.agents.container_images import image_id
from sortie.agents.engine import ENGINE_ERRORS, PROBE_TIMEOUT_S, open_docker
from sortie.proto import messages as m
from sortie.proto import subjects


async def look_up(url: str, reference: str, timeout_s: float = PROBE_TIMEOUT_S) -> m.ImageAnswer:
    """The ID of the image ``reference`` names on the engine at ``url``. Never raises for
    what an engine or a reference can do wrong; cancellation goes through."""
    try:
        docker = open_docker(url)
    except (ValueError, aiodocker.DockerError) as exc:  # a malformed DOCKER_HOST
        return m.ImageLookupFailed(reference=reference, error=f"engine {url}: {exc}")
    try:
        async with asyncio.timeout(timeout_s):
            found = await image_id(docker, reference)
    except TimeoutError:
        return m.ImageLookupFailed(
            reference=reference, error=f"the engine at {url} did not answer in {timeout_s:g} s"
        )
    except ENGINE_ERRORS as exc:
        why = exc.message if isinstance(exc, aiodocker.DockerError) else repr(exc)
        return m.ImageLookupFailed(reference=reference, error=f"engine {url}: {why}")
    finally:
        with contextlib.suppress(Exception):
            await docker.close()
    if found is None:
        return m.ImageAbsent(reference=reference)
    return m.ImageFound(reference=reference, image_id=found)


def own_answer_subject(agent_id: str, reply: str) -> bool:
    """Is ``reply`` one of this agent's image-answer subjects (the only ones it answers on,
    and the only ones its credentials let it publish to)?"""
    prefix = subjects.image_answers(agent_id).removesuffix("*")
    rest = reply.removeprefix(prefix)
    if rest == reply:
        return False
    try:
        subjects.check_token("query", rest)
    except ValueError:
        return False
    return True
