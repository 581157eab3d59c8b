"""The compute view: every target, clusters with their nodes and the autoscaler's decisions,
attached machines; forms to create, update and delete a cluster and to attach and detach a
machine over SSH (the host key's fingerprint fetched and confirmed first).

The page draws ``ComputeSnapshot``s (``compute_data.py``): the first one embedded in the page,
then each change pushed by the dashboard's one ``ComputeFeed`` (``/compute/stream``). Actions
post JSON (``compute_forms.py``) and send the requests the CLI sends; a refusal comes back as
``{"code", "message"}`` with the scheduler's words, shown next to the form.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import msgspec
import nats.errors
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sortie.client.client import ClientError, RequestRefused
from sortie.proto import messages as m
from sortie.web import compute_forms as forms
from sortie.web.access import action_form
from sortie.web.compute_feed import compute_feed_of
from sortie.web.hub import client_of
from sortie.web.pages import render
from sortie.web.sse import Event, stream
from sortie.web.view import View

UNAVAILABLE = (ClientError, TimeoutError, nats.errors.Error, OSError)


async def page(request: Request) -> Response:
    snap = await compute_feed_of(request).now()
    try:
        sizes = (await client_of(request).compute(m.SizesList())).sizes
    except UNAVAILABLE:
        sizes = []  # the snapshot's error says the scheduler does not answer
    return render(
        request, "compute.html", data=msgspec.to_builtins(snap), sizes=msgspec.to_builtins(sizes)
    )


async def snapshot_json(request: Request) -> Response:
    snap = await compute_feed_of(request).now()
    return Response(msgspec.json.encode(snap), media_type="application/json")


async def live(request: Request) -> Response:
    async def events() -> AsyncIterator[Event]:
        # closed with the page's stream, so the feed stops polling once no page is left
        async with contextlib.aclosing(compute_feed_of(request).follow()) as snapshots:
            async for snap in snapshots:
                yield Event("compute", msgspec.json.encode(snap).decode())

    return stream(request, events())


async def _ask(request: Request, message: m.Message) -> m.Message:
    """The scheduler's answer, or the HTTP refusal that carries its words."""
    try:
        reply: m.Message = await client_of(request).compute(message)
    except RequestRefused as exc:
        raise HTTPException(
            409 if exc.code in ("conflict", "invalid_state") else 400, str(exc)
        ) from None
    except UNAVAILABLE as exc:
        raise HTTPException(503, f"the scheduler did not answer ({exc}): try again") from None
    return reply


async def _read(request: Request, form: type[forms.F]) -> forms.F:
    """The action's form, once the gate let the action through."""
    await action_form(request)
    try:
        return forms.decode(await request.body(), form)
    except forms.FormError as exc:
        raise HTTPException(400, str(exc)) from None


def _done(**fields: object) -> Response:
    return JSONResponse({"ok": True, **fields})


async def create(request: Request) -> Response:
    form = await _read(request, forms.CreateForm)
    reply = await _ask(request, forms.create_request(form))
    assert isinstance(reply, m.ComputeReply)
    return _done(name=reply.info.compute.name, state=reply.info.compute.provisioning_state)


async def update(request: Request) -> Response:
    form = await _read(request, forms.UpdateForm)
    try:
        message = forms.update_request(request.path_params["name"], form)
    except forms.FormError as exc:
        raise HTTPException(400, str(exc)) from None
    reply = await _ask(request, message)
    assert isinstance(reply, m.ComputeReply)
    c = reply.info.compute.cluster
    return _done(name=reply.info.compute.name, min_nodes=c.min_nodes, max_nodes=c.max_nodes)


async def delete(request: Request) -> Response:
    form = await _read(request, forms.DeleteForm)
    name = request.path_params["name"]
    reply = await _ask(request, m.ComputeDelete(name=name, force=form.force))
    assert isinstance(reply, m.ComputeReply)
    return _done(name=name, state=reply.info.compute.provisioning_state)


async def host_key(request: Request) -> Response:
    form = await _read(request, forms.HostKeyForm)
    try:
        reply = await client_of(request).host_key(forms.host_key_request(form))
    except (forms.FormError, RequestRefused) as exc:  # a bad address, an unreachable host
        raise HTTPException(400, str(exc)) from None
    except UNAVAILABLE as exc:
        raise HTTPException(503, f"the scheduler did not answer ({exc}): try again") from None
    return JSONResponse(msgspec.to_builtins(reply))


async def attach(request: Request) -> Response:
    form = await _read(request, forms.AttachForm)
    try:
        message = forms.attach_request(form)
    except forms.FormError as exc:
        raise HTTPException(400, str(exc)) from None
    if form.check_only:
        return _done(name=message.name, checked=True)
    del form  # the credentials live on in the request alone, until it is sent
    reply = await _ask(request, message)
    assert isinstance(reply, m.VmReply)
    return _done(name=reply.vm.name, state=reply.vm.provisioning_state)


async def detach(request: Request) -> Response:
    form = await _read(request, forms.DetachForm)
    name = request.path_params["name"]
    message = m.ComputeDetach(name=name, force=form.force, keep_files=form.keep_files)
    reply = await _ask(request, message)
    assert isinstance(reply, m.VmReply)
    return _done(name=name, state=reply.vm.provisioning_state)


VIEW = View(
    name="compute",
    title="Compute",
    path="/compute",
    routes=[
        Route("/compute", page),
        Route("/compute", create, methods=["POST"]),
        Route("/compute/stream", live),
        Route("/api/compute", snapshot_json),
        Route("/compute/host-key", host_key, methods=["POST"]),
        Route("/compute/attach", attach, methods=["POST"]),
        Route("/compute/{name}/update", update, methods=["POST"]),
        Route("/compute/{name}/delete", delete, methods=["POST"]),
        Route("/compute/{name}/detach", detach, methods=["POST"]),
    ],
)
