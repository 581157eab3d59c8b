"""The model registry's decisions (pure): whether a registration is valid, which files it
names, and which version it gets.

A version is the highest stored version of the name plus one. The shell writes it with a
create that expects no value under its key (``subjects.model_key``), so two registrations of
one name that race (two schedulers, or one retried) can never both get the same version: the
loser reads the versions again and asks here once more.

A model registered from a run names the run's own artifact blobs (nothing is uploaded again)
and records the run's lineage: experiment, snapshot and git commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from sortie.proto import messages as m
from sortie.proto.model_names import check_name
from sortie.proto.paths import check_relpath

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHOWN_ARTIFACTS = 5  # artifacts a "no such artifact" message lists


def version_of(key: str, name: str) -> int | None:
    """The version a models-bucket key holds for ``name``; None if it is another name's."""
    stem, _, version = key.rpartition("/")
    return int(version) if stem == name and version.isdigit() else None


def next_version(versions: Iterable[int]) -> int:
    return max(versions, default=0) + 1


def run_files(run: m.RunRecord, run_path: str) -> list[m.ModelFile] | str:
    """The model files ``run_path`` names in the run's artifacts (that artifact, or every one
    under that folder), each path relative to ``run_path``'s parent, so the model's root is
    its last part; or why there are none."""
    path = run_path.strip("/")
    if (why := check_relpath(path)) is not None:
        return f"model path refused: {why}"
    parent = PurePosixPath(path).parent
    found = [a for a in run.artifacts if a.path == path or a.path.startswith(f"{path}/")]
    if not found:
        shown = ", ".join(a.path for a in run.artifacts[:_SHOWN_ARTIFACTS]) or "none"
        more = " ..." if len(run.artifacts) > _SHOWN_ARTIFACTS else ""
        return (
            f"run {run.run_id} has no artifact at {path!r} (its artifacts: {shown}{more}); "
            "give a file or folder under outputs/, as `sortie run show` lists them"
        )
    return [
        m.ModelFile(
            path=str(PurePosixPath(a.path).relative_to(parent)), sha256=a.sha256, size=a.size
        )
        for a in sorted(found, key=lambda a: a.path)
    ]


def check_files(files: list[m.ModelFile], missing: set[str]) -> str | None:
    """Why uploaded model files cannot be registered (``missing``: blobs not stored)."""
    if not files:
        return "a model needs at least one file: the path given holds none"
    roots = {f.path.split("/", 1)[0] for f in files}
    if len(roots) != 1:
        return f"a model's files share one root folder; these have {len(roots)}"
    for f in files:
        if (why := check_relpath(f.path)) is not None:
            return f"model file path refused: {why}"
        if not _SHA256.match(f.sha256) or f.size < 0:
            return f"model file {f.path!r}: blob must be a sha256 and size not negative"
        if f.sha256 in missing:
            return f"model file {f.path!r}: its blob {f.sha256[:12]} is not stored; upload it first"
    return None


def plan_register(
    request: m.ModelRegister,
    run: m.RunRecord | None,
    versions: Iterable[int],
    missing: set[str],
    now: float,
) -> m.ModelRecord | m.ErrorReply:
    """The record of the version ``request`` registers, or why it is refused. ``run``: the
    record of ``request.run_id`` (None if there is no such run); ``versions``: the name's
    stored versions; ``missing``: which of ``request.files``' blobs are not stored."""
    if (why := check_name(request.name)) is not None:
        return m.ErrorReply(code="bad_request", message=why)
    if request.run_id is not None and request.files:
        return m.ErrorReply(
            code="bad_request", message="register either a run's artifacts or uploaded files"
        )
    if request.run_id is not None:
        if run is None:
            return m.ErrorReply(code="not_found", message=f"no run {request.run_id!r}")
        files = run_files(run, request.run_path or request.name)
        if isinstance(files, str):
            return m.ErrorReply(code="not_found", message=files)
    else:
        files = request.files
        if (why := check_files(files, missing)) is not None:
            return m.ErrorReply(code="bad_request", message=why)
    return m.ModelRecord(
        name=request.name,
        version=next_version(versions),
        files=files,
        created_at=now,
        tags=request.tags,
        properties=request.properties,
        description=request.description,
        framework=request.framework,
        framework_version=request.framework_version,
        run_id=run.run_id if run is not None else None,
        experiment=run.spec.experiment if run is not None else None,
        snapshot_id=run.spec.snapshot_id if run is not None else None,
        git_commit=run.spec.git.commit if run is not None and run.spec.git else None,
    )
