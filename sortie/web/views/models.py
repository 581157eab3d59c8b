"""The Models view: the registered models, each name's versions with their lineage and files."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sortie.client import model_store
from sortie.client.model_store import WebserviceException
from sortie.web.downloads import blob_response
from sortie.web.hub import client_of
from sortie.web.pages import render
from sortie.web.view import View


async def page(request: Request) -> Response:
    """Every model name with its newest version; ``?name=`` the versions of one."""
    records = await model_store.all_models(client_of(request))
    name = request.query_params.get("name")
    if name:
        versions = model_store.select(records, name=name)
        if not versions:
            raise HTTPException(404, f"no model named {name!r}")
        return render(request, "models.html", name=name, versions=versions, latest=[])
    latest = model_store.select(records, latest=True)
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.name] = counts.get(rec.name, 0) + 1
    return render(request, "models.html", name=None, latest=latest, counts=counts, versions=[])


async def file(request: Request) -> Response:
    """One file of a model version, downloaded."""
    name, path = request.path_params["name"], request.path_params["path"]
    try:
        rec = await model_store.get_model(client_of(request), name, request.path_params["version"])
    except WebserviceException as exc:
        raise HTTPException(404, str(exc)) from None
    found = next((f for f in rec.files if f.path == path), None)
    if found is None:
        raise HTTPException(404, f"model {name}:{rec.version} has no file {path!r}")
    what = f"file {path} of model {name}:{rec.version}"
    return await blob_response(request, found.sha256, found.path, found.size, what=what)


VIEW = View(
    name="models",
    title="Models",
    path="/models",
    routes=[
        Route("/models", page),
        Route("/models/{name}/{version:int}/files/{path:path}", file),
    ],
)
