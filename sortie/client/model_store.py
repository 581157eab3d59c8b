"""The model registry from a client: register (a local file or folder, or a run's
artifacts), find, and download registered model versions.

Files are blobs in the content-addressed store: a file whose bytes are stored already (an
earlier version, a snapshot, a run's artifact) is not uploaded again, and a model registered
from a run names the run's artifact blobs. The scheduler writes the version records
(``sortie.api.models``); clients read them from the models bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nats.js.errors
from nats.js.kv import KeyValue

from sortie.bus.blobs import BlobError, fetch_blob_to, missing_blobs, put_blob, sha256_file
from sortie.bus.kv import kv_items
from sortie.client.client import Client, ClientError, RequestRefused
from sortie.client.views import iso
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.model_names import check_name
from sortie.proto.paths import check_relpath

# a tag filter entry, as Azure ML v1's Model.list takes it: "key" or ["key", "value"]
TagFilter = str | Sequence[str]


class WebserviceException(ClientError):
    """A model registry request failed (Azure ML v1's name for it, from
    ``azureml.exceptions``): no such model or version, a name or path refused, a download
    that would overwrite files. The message says what was wrong and what to do."""


def _local_files(model_path: Path, child_paths: Sequence[str] = ()) -> list[tuple[Path, str]]:
    """(file on disk, path in the model) for a file or every file under a folder (only
    ``child_paths`` of it, when given); the model's root is the path's last part."""
    if not model_path.exists():
        raise WebserviceException(
            f"model path {model_path} does not exist: give the file or folder to register"
        )
    root = model_path.resolve().name
    if model_path.is_file():
        return [(model_path, root)]
    found = sorted(p for p in model_path.rglob("*") if p.is_file())
    if child_paths:
        wanted = {Path(c).as_posix() for c in child_paths}
        found = [p for p in found if p.relative_to(model_path).as_posix() in wanted]
    if not found:
        raise WebserviceException(f"model folder {model_path} is empty: nothing to register")
    return [(p, f"{root}/{p.relative_to(model_path).as_posix()}") for p in found]


async def upload_files(
    client: Client, model_path: Path, child_paths: Sequence[str] = ()
) -> list[m.ModelFile]:
    """Hash a local model file or folder and upload the blobs the store lacks."""
    local = _local_files(model_path, child_paths)
    hashes = await asyncio.gather(*(asyncio.to_thread(sha256_file, p) for p, _ in local))
    missing = await missing_blobs(client.bus.blobs, hashes)
    files: list[m.ModelFile] = []
    for (path, rel), sha in zip(local, hashes, strict=True):
        if sha in missing:
            await put_blob(client.bus.blobs, sha, path)
            missing.discard(sha)
        st = path.stat()
        files.append(m.ModelFile(path=rel, sha256=sha, size=st.st_size, mode=st.st_mode & 0o777))
    return files


def _strings(values: Mapping[str, object] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (values or {}).items()}


def make_request(  # noqa: PLR0913  # the fields of a registration, all optional but the name
    name: str,
    *,
    files: list[m.ModelFile] | None = None,
    run_id: str | None = None,
    run_path: str | None = None,
    tags: Mapping[str, object] | None = None,
    properties: Mapping[str, object] | None = None,
    description: str | None = None,
    framework: str | None = None,
    framework_version: str | None = None,
) -> m.ModelRegister:
    return m.ModelRegister(
        name=name,
        files=files or [],
        run_id=run_id,
        run_path=run_path,
        tags=_strings(tags),
        properties=_strings(properties),
        description=description,
        framework=framework,
        framework_version=framework_version,
    )


def check_model_name(name: str) -> None:
    """Refuse a bad name before anything is uploaded."""
    if (why := check_name(name)) is not None:
        raise WebserviceException(why)


async def register(client: Client, request: m.ModelRegister) -> m.ModelRecord:
    """Ask the scheduler to store the next version; the version it stored."""
    check_model_name(request.name)
    try:
        reply: m.ModelRegistered = await client._request(
            subjects.API_MODELS, request, m.ModelReplyOrError
        )
    except RequestRefused as exc:
        raise WebserviceException(str(exc)) from None
    return reply.model


async def _bucket(client: Client) -> KeyValue:
    return await client.bus.js.key_value(subjects.KV_MODELS)


async def all_models(client: Client) -> list[m.ModelRecord]:
    """Every stored version, by name, then newest version first."""
    out: list[m.ModelRecord] = []
    for entry in await kv_items(await _bucket(client)):
        try:
            out.append(codec.decode(m.ModelRecord, entry.value or b""))
        except codec.BadMessage:
            continue  # only the scheduler writes records; skip one this reader cannot read
    out.sort(key=lambda r: (r.name, -r.version))
    return out


def _matches(values: Mapping[str, str], filters: Iterable[TagFilter]) -> bool:
    """Every filter holds: a key present, or a [key, value] pair equal."""
    for f in filters:
        if isinstance(f, str):
            if f not in values:
                return False
        elif len(f) != 2 or values.get(f[0]) != f[1]:  # a [key, value] pair
            return False
    return True


def select(
    records: Iterable[m.ModelRecord],
    *,
    name: str | None = None,
    tags: Iterable[TagFilter] | None = None,
    properties: Iterable[TagFilter] | None = None,
    run_id: str | None = None,
    latest: bool = False,
) -> list[m.ModelRecord]:
    """The records that pass every filter given; ``latest``: the newest version per name."""
    out = [
        r
        for r in records
        if (name is None or r.name == name)
        and (run_id is None or r.run_id == run_id)
        and _matches(r.tags, tags or ())
        and _matches(r.properties, properties or ())
    ]
    if latest:
        newest: dict[str, m.ModelRecord] = {}
        for r in out:
            if r.name not in newest or r.version > newest[r.name].version:
                newest[r.name] = r
        out = [r for r in out if newest[r.name] is r]
    return out


async def get_model(client: Client, name: str, version: int | None = None) -> m.ModelRecord:
    """Version ``version`` of model ``name``, or its newest; raises WebserviceException."""
    check_model_name(name)
    if version is not None:
        try:
            entry = await (await _bucket(client)).get(subjects.model_key(name, version))
        except nats.js.errors.KeyNotFoundError:
            raise WebserviceException(
                f"ModelNotFound: model {name!r} has no version {version}: "
                "`sortie model list --name NAME` shows its versions"
            ) from None
        return codec.decode(m.ModelRecord, entry.value or b"")
    found = select(await all_models(client), name=name, latest=True)
    if not found:
        raise WebserviceException(
            f"ModelNotFound: no model named {name!r}: `sortie model list` shows the registered "
            "models"
        )
    return found[0]


def model_url(rec: m.ModelRecord) -> str:
    """Where the model is kept: ``sortie://models/NAME/VERSION`` in its installation."""
    return f"sortie://models/{rec.name}/{rec.version}"


def model_dict(rec: m.ModelRecord) -> dict[str, Any]:
    """What a person or program sees of a model version (the CLI's JSON, ``serialize()``)."""
    return {
        "id": f"{rec.name}:{rec.version}",
        "name": rec.name,
        "version": rec.version,
        "created_time": iso(rec.created_at),
        "description": rec.description,
        "tags": dict(rec.tags),
        "properties": dict(rec.properties),
        "run_id": rec.run_id,
        "experiment_name": rec.experiment,
        "snapshot_id": rec.snapshot_id,
        "git_commit": rec.git_commit,
        "model_framework": rec.framework,
        "model_framework_version": rec.framework_version,
        "url": model_url(rec),
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in rec.files],
    }


def model_root(rec: m.ModelRecord) -> str:
    """The first part every file path of the model shares (a file's name, or a folder's)."""
    return rec.files[0].path.split("/", 1)[0]


async def download(client: Client, rec: m.ModelRecord, target_dir: Path, exist_ok: bool) -> Path:
    """Write the model's files under ``target_dir``; the path of its root file or folder.
    Refuses (writing nothing) when a file exists there, unless ``exist_ok``."""
    targets: list[tuple[m.ModelFile, Path]] = []
    for f in rec.files:
        if (why := check_relpath(f.path)) is not None:
            raise WebserviceException(f"model file path refused: {why}")
        target = target_dir / f.path
        if target.exists() and not exist_ok:
            raise WebserviceException(
                f"File already exists: {target}; pass exist_ok=True (CLI: --exist-ok) to "
                "overwrite it, or choose another target directory"
            )
        targets.append((f, target))
    for f, target in targets:
        try:
            await fetch_blob_to(client.bus.blobs, f.sha256, target)
        except BlobError as exc:
            raise WebserviceException(
                f"file {f.path} of model {rec.name}:{rec.version} cannot be downloaded: {exc}"
            ) from None
        target.chmod(f.mode & 0o777)
    return target_dir / model_root(rec)
