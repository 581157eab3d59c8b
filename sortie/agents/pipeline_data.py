"""A pipeline step's data on its agent: inputs laid out, output dirs made, paths in arguments.

A step run's ``RunSpec.data_inputs`` (PipelineData name -> manifest id) and ``data_outputs``
(names) live in one directory beside the attempt's working tree (:func:`data_dir`,
``runs/<run>/<attempt>.data``)::

    in/NAME    the files of that manifest, laid out as a snapshot is (agents.snapshot_cache:
               only the blobs the agent's cache lacks are fetched)
    out/NAME   an empty directory the run writes

The directory is the run's own, like its working tree (agents.executors.sandbox hands it to the
run's uid; Landlock lets the run read ``in/`` and write ``out/``); a container sees it at
``/sortie/data`` (``in/`` read-only). The arguments' data tokens (``pipelines.data_token``)
become these paths as the run sees them (:func:`data_paths`, ``pipelines.resolve_data``). After
the run completes, each ``out/NAME`` is stored content-addressed (agents.data_upload).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path, PurePath

from sortie.agents.snapshot_cache import SnapshotCache
from sortie.proto import messages as m
from sortie.proto import pipelines

IN = "in"
OUT = "out"


def data_dir(workdir: Path) -> Path:
    """Where an attempt's pipeline data lies: beside its working tree (``<attempt>.data``)."""
    return workdir.with_name(f"{workdir.name}.data")


def has_data(spec: m.RunSpec) -> bool:
    return bool(spec.data_inputs or spec.data_outputs)


def data_problem(spec: m.RunSpec) -> str | None:
    """Why the run's data cannot be laid out (pure): a name that is not a PipelineData name
    (it becomes a directory name), one named as input and output, or a data token in the
    arguments naming data the run neither reads nor writes. None: it can."""
    names = [*spec.data_inputs, *spec.data_outputs]
    bad = [n for n in names if not pipelines.NAME_RE.match(n)]
    if bad:
        return (
            f"data names {', '.join(map(repr, bad[:5]))} are not PipelineData names (a letter, "
            "then letters, digits, '_' or '-', at most 63)"
        )
    dup = sorted(set(spec.data_inputs) & set(spec.data_outputs))
    if dup or len(set(spec.data_outputs)) != len(spec.data_outputs):
        twice = dup or sorted({n for n in spec.data_outputs if spec.data_outputs.count(n) > 1})
        return f"data {', '.join(map(repr, twice))} is named twice among the inputs and outputs"
    unknown = [n for n in pipelines.data_names(spec.arguments) if n not in names]
    if unknown:
        return (
            f"the arguments name data {', '.join(map(repr, unknown))}, which the step neither "
            "reads (data_inputs) nor writes (data_outputs): add it to the step's inputs or "
            "outputs"
        )
    return None


def data_paths(root: PurePath, spec: m.RunSpec) -> dict[str, str]:
    """Each data name -> its directory under ``root`` (the data dir as the run sees it)."""
    paths = {name: str(root / IN / name) for name in spec.data_inputs}
    paths.update({name: str(root / OUT / name) for name in spec.data_outputs})
    return paths


def run_arguments(spec: m.RunSpec, root: PurePath | None) -> list[str]:
    """The run's arguments with its data tokens replaced by the paths under ``root`` (None:
    the run has no data, so none to replace; :func:`data_problem` checked the names first)."""
    if root is None:
        return list(spec.arguments)
    return pipelines.resolve_data(list(spec.arguments), data_paths(root, spec))


async def lay_out_data(
    cache: SnapshotCache, spec: m.RunSpec, root: Path, say: Callable[[str], None]
) -> None:
    """Make ``root`` anew: each input's files under ``in/``, an empty ``out/NAME`` for each
    output. Raises ``SnapshotError`` when an input cannot be had (the message says which)."""
    await asyncio.to_thread(_fresh, root)
    for name, manifest_id in sorted(spec.data_inputs.items()):
        await cache.lay_out(manifest_id, root / IN / name, say, what=f"data {name}")
    for name in spec.data_outputs:
        (root / OUT / name).mkdir(parents=True)


def _fresh(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    (root / IN).mkdir(parents=True)
    (root / OUT).mkdir()
