"""What a training script sees of Sortie: ``Run.get_context()``, the hosted platform's v1 Run API.

This module uses the standard library only: the agent puts a copy of it on the run's
``PYTHONPATH`` as the package ``sortie`` (with ``sortie.azureml.core`` and
``sortie.azureml.core.run`` re-exporting :class:`Run`) so that it imports inside any
environment.

Everything goes through the agent: the script holds no broker credentials. The channel is a
documented file protocol any language can write: the agent sets ``SORTIE_METRICS_FILE`` to a
path (a named pipe the agent reads as lines arrive). Append one JSON object per line, of at
most 4096 bytes (written atomically):

- a metric point: ``{"name": str, "value": number|string|bool, "t": unix seconds,
  "step": int|null}``, with ``"column": str`` for one cell of a table metric (``log_row``,
  ``log_table``) and ``"run": CHILD_ID`` for a child run's point;
- ``{"kind": "tags", "run": CHILD_ID|null, "tags": {str: str}}``;
- ``{"kind": "properties", "run": CHILD_ID|null, "properties": {str: str}}``;
- ``{"kind": "child", "id": "<run id>_<n>", "name": str}``: a child run starts (Running);
- ``{"kind": "state", "run": CHILD_ID, "state": "Completed"|"Failed", "error": str|null}``.

Files (``upload_file``, ``upload_folder``, ``log_image``) are copied into the run's outputs
directory (``SORTIE_OUTPUTS_DIR``): a name under ``outputs/`` lands there as itself, any other
name under its ``.sortie-uploads/`` folder, which the agent uploads under the name given
(``logs/y.txt`` becomes the artifact ``logs/y.txt``).

Outside Sortie (no ``SORTIE_RUN_ID``), every call prints what it would record and works on
this process's copy, so scripts still run with plain ``python``.

What stays in the script: ``get_metrics()`` returns the values this process logged (not those
of earlier attempts); ``get_tags()`` the submit-time tags and those this process set,
``get_properties()`` those this process added;
``complete()`` / ``fail()`` end a child run at once; on the script's own run, ``fail()``
makes it end Failed when the script ends (even with exit code 0), and ``complete()`` only
sets what ``get_status()`` says (the run completes when the script exits 0). Submit-time
tags come in ``SORTIE_TAGS``; tags a client adds while the run runs are not seen here.
``experiment`` has ``name`` and ``workspace`` (always None inside a run: a run holds no
credentials).

Environment the agent sets for every run: ``SORTIE_RUN_ID``, ``SORTIE_ATTEMPT``,
``SORTIE_EXPERIMENT``, ``SORTIE_TARGET``, ``SORTIE_METRICS_FILE``, ``SORTIE_OUTPUTS_DIR``,
``SORTIE_STOP_REASON_FILE`` and ``SORTIE_NODE_PRIORITY`` (and ``SORTIE_TAGS``).

``SORTIE_NODE_PRIORITY`` is ``dedicated`` or ``lowpriority`` (a node that can be preempted:
checkpoint often). ``SORTIE_STOP_REASON_FILE`` names a file outside the working directory.
Before the agent sends the run SIGTERM it writes one word there: ``preempted`` (the node is
being taken away; the run will be requeued, so save a checkpoint), ``canceled``, ``timeout``
(max duration reached) or ``shutdown`` (the agent is stopping; the run will be requeued).
A SIGTERM handler reads it with ``Run.get_context().stop_reason()``. On a GPU agent,
``CUDA_VISIBLE_DEVICES`` lists exactly the GPUs given to the run (empty: none).

Every run also gets what torch.distributed and MPI read: ``WORLD_SIZE`` (nodes in the run),
``RANK`` and ``NODE_RANK`` (this node, 0 first), ``LOCAL_RANK`` (0: one process per node),
``MASTER_ADDR`` / ``MASTER_PORT`` (rank 0's host and a port chosen for the run), and
``SORTIE_HOSTFILE``, a file with one ``HOST slots=1`` line per rank. Each node's output is
kept under its rank (``sortie run logs RUN --rank N``).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ENV_RUN_ID = "SORTIE_RUN_ID"
ENV_ATTEMPT = "SORTIE_ATTEMPT"
ENV_EXPERIMENT = "SORTIE_EXPERIMENT"
ENV_TARGET = "SORTIE_TARGET"
ENV_METRICS_FILE = "SORTIE_METRICS_FILE"
ENV_OUTPUTS_DIR = "SORTIE_OUTPUTS_DIR"
ENV_HOSTFILE = "SORTIE_HOSTFILE"  # every node of the run, one "HOST slots=1" line per rank
ENV_STOP_REASON_FILE = "SORTIE_STOP_REASON_FILE"
ENV_NODE_PRIORITY = "SORTIE_NODE_PRIORITY"
ENV_TAGS = "SORTIE_TAGS"  # the run's tags at submit, as a JSON object (set when it has some)

MAX_LINE = 4096
UPLOADS_DIR = ".sortie-uploads"  # under outputs/: files uploaded under other names
OUTPUTS_PREFIX = "outputs/"


class Experiment:
    """The run's experiment as a script sees it: ``name``; ``workspace`` is None in a run."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.workspace: Any = None

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r})"

    def __str__(self) -> str:
        return self.name or ""

    def __eq__(self, other: object) -> bool:  # a plain name compares equal (Sortie <= 0.3)
        if isinstance(other, Experiment):
            return self.name == other.name
        return isinstance(other, str) and other == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def check_name(name: object, what: str = "artifact name") -> str:
    """``name`` if it is a relative path without ``..``, ``.``, empty parts, NUL or
    backslash (the rule of ``sortie.proto.paths``); ValueError saying why otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise ValueError(f"{what} {name!r} must be a relative path with '/' separators")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{what} {name!r} contains '..', '.' or an empty part")
    return name


def _clean_value(name: str, value: Any) -> Any:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _clean_value(name, value.item())
    raise TypeError(f"metric {name!r}: value must be a number, string or bool")


MAX_KEY, MAX_VALUE = 256, 1024  # a tag's or property's key and value (sortie.proto.notes)


def _str_map(what: str, entries: Any) -> dict[str, str]:
    if isinstance(entries, str):
        entries = [entries]
    if isinstance(entries, list | tuple):  # names alone: tags without a value
        entries = dict.fromkeys(entries, "")
    if not isinstance(entries, dict):
        raise TypeError(f"{what} must be a dict of str to str, not {type(entries).__name__}")
    out: dict[str, str] = {}
    for key, value in entries.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY or "\x00" in key:
            raise ValueError(f"{what}: a key must be a string of 1 to {MAX_KEY} characters")
        text = "" if value is None else str(value)
        if len(text) > MAX_VALUE or "\x00" in text:
            raise ValueError(f"{what} {key!r}: the value must be at most {MAX_VALUE} characters")
        out[key] = text
    return out


def _submitted_tags(env: dict[str, str]) -> dict[str, str]:
    try:
        tags = json.loads(env.get(ENV_TAGS) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


def _encoded_size(record: dict[str, Any]) -> int:
    return len(json.dumps(record).encode()) + 1


class _Shared:
    """What a run and its children share: the pipe, a write lock, the child counter."""

    def __init__(self, metrics_path: str | None) -> None:
        self.metrics_path = metrics_path
        self.lock = threading.Lock()
        self.children = 0

    def send(self, record: dict[str, Any], what: str) -> None:
        data = (json.dumps(record) + "\n").encode()  # ASCII: each line within MAX_LINE bytes
        if len(data) > MAX_LINE:
            raise ValueError(f"{what} is too large (over {MAX_LINE} bytes encoded)")
        assert self.metrics_path is not None
        with self.lock, open(self.metrics_path, "ab", buffering=0) as fh:
            fh.write(data)


class Run:
    """The current run (or a child of it), as seen from inside the training script."""

    _current: Run | None = None
    _lock = threading.Lock()

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        _parent: Run | None = None,
        _child_id: str | None = None,
        _name: str | None = None,
    ) -> None:
        env = dict(os.environ) if env is None else env
        self.id: str | None = env.get(ENV_RUN_ID)
        self.attempt = int(env.get(ENV_ATTEMPT, "0") or 0)
        self.experiment = Experiment(env.get(ENV_EXPERIMENT))
        self.target: str | None = env.get(ENV_TARGET)
        self.outputs_dir: str = env.get(ENV_OUTPUTS_DIR, "outputs")
        self._stop_reason_path = env.get(ENV_STOP_REASON_FILE)
        self._shared: _Shared = (
            _Shared(env.get(ENV_METRICS_FILE)) if _parent is None else _parent._shared
        )
        self.parent = _parent
        self.name = _name
        self._child = _child_id is not None
        if _child_id is not None:
            self.id = _child_id
        elif self.id is None:
            self.id = f"OfflineRun_{uuid.uuid4()}"
        self._online = env.get(ENV_RUN_ID) is not None and bool(self._shared.metrics_path)
        if _parent is not None:  # a child logs where its parent does
            self.attempt, self.experiment = _parent.attempt, _parent.experiment
            self.target, self.outputs_dir = _parent.target, _parent.outputs_dir
            self._online = _parent._online
        self._tags: dict[str, str] = {} if _parent is not None else _submitted_tags(env)
        self._properties: dict[str, str] = {}
        self._metrics: dict[str, Any] = {}
        self._children: list[Run] = []
        self._status = "Running"

    @classmethod
    def get_context(cls, allow_offline: bool = True, **_kwargs: Any) -> Run:
        """The run this process belongs to (an offline run outside Sortie, unless
        ``allow_offline`` is False: then RuntimeError)."""
        with cls._lock:
            if cls._current is None:
                cls._current = cls()
            run = cls._current
        if run.offline and not allow_offline:
            raise RuntimeError("not inside a Sortie run (no SORTIE_RUN_ID) and allow_offline=False")
        return run

    @property
    def offline(self) -> bool:
        return not self._online

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, experiment={self.experiment.name!r})"

    def stop_reason(self) -> str | None:
        """Why the agent is stopping this run: "preempted", "canceled", "early_terminated"
        (a sweep's policy stopped this trial), "timeout" or "shutdown"; None while it is not
        being stopped (or outside Sortie)."""
        if not self._stop_reason_path:
            return None
        try:
            with open(self._stop_reason_path, encoding="utf-8", errors="replace") as fh:
                word = fh.read(64).strip()
        except OSError:
            return None
        return word or None

    # --- metrics -------------------------------------------------------------------------

    def _point(self, name: str, value: Any, step: int | None, column: str | None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("metric name must be a non-empty string")
        clean = _clean_value(name, value)
        if self.offline:
            shown = f"{name}[{column}]" if column is not None else name
            print(f"[metric] {shown} = {clean}", file=sys.stdout, flush=True)
        else:
            record: dict[str, Any] = {"name": name, "value": clean, "t": time.time(), "step": step}
            if column is not None:
                record["column"] = column
            if self._child:
                record["run"] = self.id
            self._shared.send(record, f"metric {name!r}")
        if column is None:
            self._metrics.setdefault(name, []).append(clean)
        else:
            table = self._metrics.setdefault(name, {})
            if isinstance(table, dict):
                table.setdefault(column, []).append(clean)

    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        """Record one value of metric ``name`` (a number, string or bool)."""
        self._point(name, value, step, None)

    def log_list(self, name: str, value: Any, description: str = "") -> None:
        """Record a list of values (each with its index as step)."""
        if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
            raise TypeError(f"metric {name!r}: log_list takes a list of values")
        for i, v in enumerate(value):
            self._point(name, v, i, None)

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        """Add one row to table metric ``name``: each keyword is a column."""
        if not kwargs:
            raise ValueError(f"metric {name!r}: log_row takes the row's columns as keywords")
        for column, value in kwargs.items():
            self._point(name, value, None, column)

    def log_table(self, name: str, value: Any, description: str = "") -> None:
        """Record table metric ``name`` from a dict of column name -> list of values."""
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, list | tuple) for k, v in value.items()
        ):
            raise TypeError(
                f"metric {name!r}: log_table takes a dict of column name -> list of values, "
                f"e.g. {{'epoch': [1, 2], 'loss': [0.5, 0.4]}}; got {type(value).__name__}"
            )
        for column, cells in value.items():
            for i, cell in enumerate(cells):
                self._point(name, cell, i, column)

    def log_image(
        self, name: str, path: str | None = None, plot: Any = None, description: str = ""
    ) -> None:
        """Keep an image as an artifact (``path``: a file; ``plot``: a matplotlib figure or
        pyplot, saved as PNG) and record its artifact name as metric ``name``."""
        if (path is None) == (plot is None):
            raise ValueError(f"log_image {name!r}: give exactly one of path= or plot=")
        check_name(name, "image name")
        if plot is not None:
            buf = io.BytesIO()
            plot.savefig(buf, format="png")
            artifact = name if "." in name.rsplit("/", 1)[-1] else f"{name}.png"
            buf.seek(0)
            self.upload_file(artifact, buf)
        else:
            ext = Path(path or "").suffix
            artifact = name if "." in name.rsplit("/", 1)[-1] else f"{name}{ext}"
            self.upload_file(artifact, path or "")
        self._point(name, artifact, None, None)

    def get_metrics(
        self,
        name: str | None = None,
        recursive: bool = False,
        run_type: str | None = None,
        populate: bool = False,
    ) -> dict[str, Any]:
        """What this process logged: name -> value (a list when logged more than once; a
        dict of column -> values for a table). ``recursive``: {run id: metrics} of this run
        and its children."""
        if recursive:
            out = {self.id or "": self.get_metrics(name)}
            for child in self._children:
                out.update(child.get_metrics(name, recursive=True))
            return out
        shown: dict[str, Any] = {}
        for key, value in self._metrics.items():
            if name is not None and key != name:
                continue
            if isinstance(value, dict):
                shown[key] = {c: list(v) for c, v in value.items()}
            else:
                shown[key] = value[0] if len(value) == 1 else list(value)
        return shown

    # --- tags and properties ---------------------------------------------------------------

    def _note(self, record: dict[str, Any], shown: str) -> None:
        if self.offline:
            print(f"[{record['kind']}] {shown}", file=sys.stdout, flush=True)
            return
        field = record["kind"]  # "tags" / "properties": too many for one line go one a line
        entries = record.get(field)
        if isinstance(entries, dict) and len(entries) > 1 and _encoded_size(record) > MAX_LINE:
            for key, value in entries.items():
                self._shared.send({**record, field: {key: value}}, f"{field} {key!r}")
            return
        self._shared.send(record, field)

    def tag(self, key: str, value: Any = None) -> None:
        """Tag the run (``value`` None: an empty value)."""
        self.set_tags({key: value})

    def set_tags(self, tags: dict[str, Any] | list[str] | str) -> None:
        """Set tags: a dict of key -> value, or tag names alone (empty values)."""
        clean = _str_map("tags", tags)
        self._note({"kind": "tags", "run": self._wire_id(), "tags": clean}, f"{clean}")
        self._tags.update(clean)

    def get_tags(self) -> dict[str, str]:
        return dict(self._tags)

    def add_properties(self, properties: dict[str, Any]) -> None:
        """Add properties (a property once set keeps its value)."""
        clean = _str_map("properties", properties)
        self._note({"kind": "properties", "run": self._wire_id(), "properties": clean}, f"{clean}")
        for key, value in clean.items():
            self._properties.setdefault(key, value)

    def get_properties(self) -> dict[str, str]:
        return dict(self._properties)

    def _wire_id(self) -> str | None:
        return self.id if self._child else None

    # --- files -----------------------------------------------------------------------------

    def _staged(self, name: str) -> Path:
        if name.startswith(OUTPUTS_PREFIX):
            return Path(self.outputs_dir) / name[len(OUTPUTS_PREFIX) :]
        return Path(self.outputs_dir) / UPLOADS_DIR / name

    def upload_file(self, name: str, path_or_stream: Any, datastore_name: Any = None) -> None:
        """Keep a file (a path, or a stream of bytes) as the run's artifact ``name``."""
        check_name(name)
        if self.offline:
            shown = path_or_stream if isinstance(path_or_stream, str | os.PathLike) else "<stream>"
            print(f"[upload] {name} <- {shown}", file=sys.stdout, flush=True)
            return
        dest = self._staged(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(path_or_stream, str | os.PathLike):
            shutil.copyfile(path_or_stream, dest)
            return
        if not hasattr(path_or_stream, "read"):
            raise TypeError(f"upload_file {name!r}: give a file path or a readable stream")
        with dest.open("wb") as out:
            while chunk := path_or_stream.read(1 << 20):
                out.write(chunk.encode() if isinstance(chunk, str) else chunk)

    def upload_files(self, names: list[str], paths: list[str], **_kwargs: Any) -> None:
        if len(names) != len(paths):
            raise ValueError("upload_files: names and paths must have the same length")
        for name, path in zip(names, paths, strict=True):
            self.upload_file(name, path)

    def upload_folder(self, name: str, path: str, datastore_name: Any = None) -> None:
        """Keep every file under directory ``path`` as ``name/<relative path>``."""
        check_name(name)
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"upload_folder {name!r}: {path!r} is not a directory")
        for full in sorted(p for p in root.rglob("*") if p.is_file()):
            self.upload_file(f"{name}/{full.relative_to(root).as_posix()}", full)

    # --- children and status ---------------------------------------------------------------

    def child_run(
        self, name: str | None = None, run_id: str | None = None, outputs: str | None = None
    ) -> Run:
        """Start a child run: a run of its own (with this run as its parent) that this
        process logs to."""
        root = self
        while root.parent is not None:
            root = root.parent
        if run_id is None:
            self._shared.children += 1
            suffix = str(self._shared.children)
            if self.attempt > 1:
                suffix = f"a{self.attempt}_{suffix}"
        else:
            suffix = check_name(run_id, "child run id")
        child_id = f"{root.id}_{suffix}"
        child = Run(_parent=self, _child_id=child_id, _name=name)
        self._note({"kind": "child", "id": child_id, "name": name or ""}, f"{child_id} {name}")
        self._children.append(child)
        return child

    def create_children(
        self,
        count: int | None = None,
        tag_key: str | None = None,
        tag_values: list[str] | None = None,
    ) -> list[Run]:
        """``count`` children, or one per value of ``tag_values`` tagged ``tag_key``."""
        if tag_values is not None:
            if tag_key is None:
                raise ValueError("create_children: tag_values needs tag_key")
            children = [self.child_run() for _ in tag_values]
            for child, value in zip(children, tag_values, strict=True):
                child.tag(tag_key, value)
            return children
        if not isinstance(count, int) or count < 1:
            raise ValueError("create_children: give count (a positive int) or tag_values")
        return [self.child_run() for _ in range(count)]

    def get_children(self, **_kwargs: Any) -> list[Run]:
        return list(self._children)

    def _end(self, state: str, error: str | None) -> None:
        if self._status in ("Completed", "Failed"):
            return
        self._status = state
        if self._child or state == "Failed":
            self._note({"kind": "state", "run": self.id, "state": state, "error": error}, state)

    def complete(self, _set_status: bool = True) -> None:
        """End a child run as Completed (the script's own run ends when the script does)."""
        self._end("Completed", None)

    def fail(
        self, error_details: Any = None, error_code: Any = None, _set_status: bool = True
    ) -> None:
        """Mark the run Failed: a child at once; the script's own run when the script ends
        (even with exit code 0), with ``error_details`` as its error message."""
        details = None if error_details is None else str(error_details)[:1000]
        if error_code is not None:
            details = f"{error_code}: {details or 'failed'}"
        self._end("Failed", details)

    def get_status(self) -> str:
        return self._status

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: object, *_rest: object) -> None:
        if kind is None:
            self.complete()
        else:
            self.fail()
