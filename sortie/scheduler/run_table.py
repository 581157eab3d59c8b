"""The runs table: a ``Table`` that also keeps, as its rows change, what the decision code asks
of the runs every cycle, so that a cycle costs what changed and what it places, not every run
held (a million queued runs are a million rows).

Kept: the queued runs in queue order (priority first, then age, then id) and counted per
placement class; the queued runs with a queue timeout or a recorded wait; the runs on agents,
and on each agent. And, for reconciliation (``reconcile.Scope``), what changed since it last
looked: the runs on agents whose record changed, and the attempts that left an agent's care
(the agent may still hold one: it is then stale there).
Each is updated on ``put``, ``load``, ``forget`` and ``delete`` from the row's old and new
record (records are frozen: a row changes only by being replaced). Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping

from sortedcontainers import SortedList

from sortie.proto import messages as m
from sortie.proto.gang import agent_ids
from sortie.proto.states import ON_AGENT, RunState
from sortie.scheduler.placement import ClassKey, class_key
from sortie.scheduler.tables import Table

QueueKey = tuple[int, float, str]
Held = tuple[str, tuple[str, int]]  # an agent, and an attempt (run id, attempt) it may hold


def queue_key(run_id: str, rec: m.RunRecord) -> QueueKey:
    """A queued run's place: higher priority first, then older, then by id."""
    return (-rec.spec.priority, rec.created_at, run_id)


class RunTable(Table[m.RunRecord]):
    """Runs by id, with the queue, the placement classes and the runs on agents kept."""

    __slots__ = (
        "_by_agent",
        "_classes",
        "_left",
        "_on_agent",
        "_queue",
        "_timed",
        "_touched",
        "_waiting",
    )

    def __init__(self, rows: Mapping[str, m.RunRecord] | None = None) -> None:
        super().__init__()
        self._queue = SortedList()  # of QueueKey, for the queued runs
        self._classes: Counter[ClassKey] = Counter()  # queued runs per placement class
        # (dicts used as sets: they keep insertion order, so every pass sees the same order)
        self._timed: dict[str, None] = {}  # queued runs with a queue timeout
        self._waiting: dict[str, None] = {}  # queued runs with a recorded wait (``waiting``)
        self._on_agent: dict[str, None] = {}  # runs in a state an agent holds them in
        self._by_agent: dict[str, dict[str, None]] = {}  # agent -> its runs of _on_agent
        self._touched: dict[str, None] = {}  # runs on agents changed since take_touched()
        self._left: dict[Held, None] = {}  # attempts that left an agent since take_touched()
        for key, value in (rows or {}).items():
            self.load(key, value)

    # --- what the decision code asks ------------------------------------------------------

    def queued(self) -> Iterator[m.RunRecord]:
        """The queued runs in queue order (lazily: do not change the table meanwhile)."""
        rows = self._rows
        for _, _, run_id in self._queue:
            yield rows[run_id]

    @property
    def queued_count(self) -> int:
        return len(self._queue)

    @property
    def classes(self) -> Mapping[ClassKey, int]:
        """How many queued runs each placement class has (classes with none are absent)."""
        return self._classes

    def timed(self) -> list[m.RunRecord]:
        """The queued runs that have a queue timeout."""
        return [self._rows[k] for k in self._timed]

    def waiting(self) -> list[m.RunRecord]:
        """The queued runs whose record holds a wait (a target without agents)."""
        return [self._rows[k] for k in self._waiting]

    def on_agent(self) -> list[m.RunRecord]:
        """The runs an agent holds (Preparing, Running, Finalizing)."""
        return [self._rows[k] for k in self._on_agent]

    def on(self, agent_id: str) -> list[str]:
        """The ids of the runs one agent holds (any rank of a gang)."""
        return list(self._by_agent.get(agent_id, ()))

    def take_touched(self) -> tuple[list[str], list[Held]]:
        """What changed since the last take, and the marks cleared: the runs on agents whose
        record was set (loaded or put), and each attempt that left an agent (the run moved
        on, ended or left memory) with that agent."""
        touched = [k for k in self._touched if k in self._on_agent]
        left = list(self._left)
        self._touched = {}
        self._left = {}
        return touched, left

    # --- every change keeps the indexes -----------------------------------------------------

    def put(self, key: str, value: m.RunRecord) -> None:
        self._unindex(key)
        super().put(key, value)
        self._index(key, value)

    def load(self, key: str, value: m.RunRecord) -> None:
        self._unindex(key)
        super().load(key, value)
        self._index(key, value)

    def forget(self, key: str) -> None:
        self._unindex(key)
        super().forget(key)

    def delete(self, key: str) -> None:
        self._unindex(key)
        super().delete(key)

    def _index(self, key: str, rec: m.RunRecord) -> None:
        if rec.state is RunState.QUEUED:
            self._queue.add(queue_key(key, rec))
            self._classes[class_key(rec.spec)] += 1
            if rec.spec.queue_timeout_s is not None:
                self._timed[key] = None
            if rec.waiting is not None:
                self._waiting[key] = None
        elif rec.state in ON_AGENT:
            self._on_agent[key] = None
            self._touched[key] = None
            for agent_id in agent_ids(rec):
                self._by_agent.setdefault(agent_id, {})[key] = None

    def _unindex(self, key: str) -> None:
        old = self._rows.get(key)
        if old is None:
            return
        if old.state is RunState.QUEUED:
            self._queue.remove(queue_key(key, old))
            ckey = class_key(old.spec)
            self._classes[ckey] -= 1
            if self._classes[ckey] <= 0:
                del self._classes[ckey]
            self._timed.pop(key, None)
            self._waiting.pop(key, None)
        elif old.state in ON_AGENT:
            self._on_agent.pop(key, None)
            for agent_id in agent_ids(old):
                mine = self._by_agent.get(agent_id)
                if mine is not None:
                    mine.pop(key, None)
                    if not mine:
                        del self._by_agent[agent_id]
                self._left[(agent_id, (key, old.attempt))] = None
