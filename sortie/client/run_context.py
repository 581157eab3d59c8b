"""What a training script sees of Sortie: ``Run.get_context().log(name, value)``.

This module uses the standard library only: the agent puts a copy of it on the run's
``PYTHONPATH`` as the package ``sortie`` so that it imports inside any environment.

The metrics channel is a documented file protocol any language can write: the agent sets
``SORTIE_METRICS_FILE`` to a path (a named pipe the agent reads as lines arrive). Append one
JSON object per line: ``{"name": str, "value": number|string|bool, "t": unix seconds,
"step": int|null}``. Lines of at most 4096 bytes are written atomically.

Outside Sortie (no ``SORTIE_RUN_ID``), ``log`` prints the metric so scripts still run with
plain ``python``.

Environment the agent sets for every run: ``SORTIE_RUN_ID``, ``SORTIE_ATTEMPT``,
``SORTIE_EXPERIMENT``, ``SORTIE_TARGET``, ``SORTIE_METRICS_FILE``, ``SORTIE_OUTPUTS_DIR``,
``SORTIE_STOP_REASON_FILE`` and ``SORTIE_NODE_PRIORITY``.

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

import json
import math
import os
import sys
import threading
import time
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

MAX_LINE = 4096


class Run:
    """The current run, as seen from inside the training script."""

    _current: Run | None = None
    _lock = threading.Lock()

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        self.id: str | None = env.get(ENV_RUN_ID)
        self.attempt = int(env.get(ENV_ATTEMPT, "0") or 0)
        self.experiment: str | None = env.get(ENV_EXPERIMENT)
        self.target: str | None = env.get(ENV_TARGET)
        self.outputs_dir: str = env.get(ENV_OUTPUTS_DIR, "outputs")
        self._metrics_path = env.get(ENV_METRICS_FILE)
        self._stop_reason_path = env.get(ENV_STOP_REASON_FILE)
        self._write_lock = threading.Lock()

    @classmethod
    def get_context(cls) -> Run:
        """The run this process belongs to (an offline run outside Sortie)."""
        with cls._lock:
            if cls._current is None:
                cls._current = cls()
            return cls._current

    @property
    def offline(self) -> bool:
        return self.id is None or not self._metrics_path

    def stop_reason(self) -> str | None:
        """Why the agent is stopping this run: "preempted", "canceled", "timeout" or
        "shutdown"; None while it is not being stopped (or outside Sortie)."""
        if not self._stop_reason_path:
            return None
        try:
            with open(self._stop_reason_path, encoding="utf-8", errors="replace") as fh:
                word = fh.read(64).strip()
        except OSError:
            return None
        return word or None

    def log(self, name: str, value: Any, step: int | None = None) -> None:
        """Record one value of metric ``name`` (a number, string or bool)."""
        if not isinstance(name, str) or not name:
            raise ValueError("metric name must be a non-empty string")
        if isinstance(value, bool | str):
            clean: Any = value
        elif isinstance(value, int | float):
            clean = value
            if isinstance(value, float) and not math.isfinite(value):
                clean = str(value)
        elif hasattr(value, "item"):  # numpy scalars
            clean = value.item()
        else:
            raise TypeError(f"metric {name!r}: value must be a number, string or bool")
        if self.offline:
            print(f"[metric] {name} = {clean}", file=sys.stdout, flush=True)
            return
        line = json.dumps({"name": name, "value": clean, "t": time.time(), "step": step})
        data = (line + "\n").encode()
        if len(data) > MAX_LINE:
            raise ValueError(f"metric {name!r} is too large (over {MAX_LINE} bytes encoded)")
        assert self._metrics_path is not None
        with self._write_lock, open(self._metrics_path, "ab", buffering=0) as fh:
            fh.write(data)

    def log_list(self, name: str, values: list[Any]) -> None:
        for i, v in enumerate(values):
            self.log(name, v, step=i)
