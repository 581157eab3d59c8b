"""The run index: a small summary of every stored run, in SQLite on the scheduler's disk.

Listing runs must not read every record (with 100,000 runs a full read of the runs bucket takes
seconds), and the scheduler's memory must not grow with history: kept in memory, the index
cost 0.8 KiB a run, 1.2 GiB at a million. So it lives in one SQLite file in the scheduler's data
directory, kept current from the runs stream by ``index_feed.py`` (a restart reads only what
was stored after the last sequence the file holds), and by the scheduler as it stores each
record, so a run is listed the moment it is stored.

Each write names the record's stream sequence (its revision): a row changes only to a record
at least as new, so the feed and the scheduler's own writes may come in any order. A client
asks for one page of run ids (``proto/run_index.RunQuery``) and then gets those records by
key; ``tests/scheduler/test_run_index.py`` checks every page against a plain filter and sort.

Queries run on a connection of their own (``reader``), off the event loop's thread: SQLite lets
one writer and readers go on at once (write-ahead log), and a scan of a million rows is not
the loop's time.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sortie.proto import messages as m
from sortie.proto import run_index as q

SCHEMA_VERSION = "1"
MAX_FINITE = 1.7976931348623157e308  # a metric beyond it (inf) has no best

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    experiment TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    parent_id TEXT,
    sweep INTEGER NOT NULL,
    pipeline INTEGER NOT NULL,
    folded_id TEXT NOT NULL,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_key ON runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment, created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_parent ON runs (parent_id);
CREATE TABLE IF NOT EXISTS tags (
    run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_key ON tags (key, value);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metrics_by_name ON metrics (name);
"""

_UPSERT = """
INSERT INTO runs (run_id, created_at, experiment, target, state, parent_id, sweep, pipeline,
                  folded_id, revision)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET
    created_at = excluded.created_at, experiment = excluded.experiment,
    target = excluded.target, state = excluded.state, parent_id = excluded.parent_id,
    sweep = excluded.sweep, pipeline = excluded.pipeline, folded_id = excluded.folded_id,
    revision = excluded.revision
WHERE excluded.revision >= runs.revision
"""

Record = m.RunRecord | q.IndexedRun


def row_of(rec: Record, revision: int) -> tuple[Any, ...]:
    sweep = rec.sweep is not None if isinstance(rec, m.RunRecord) else rec.is_sweep
    pipeline = rec.pipeline is not None if isinstance(rec, m.RunRecord) else rec.is_pipeline
    return (
        rec.run_id,
        rec.created_at,
        rec.spec.experiment,
        rec.spec.target,
        str(rec.state),
        rec.parent_id,
        int(sweep),
        int(pipeline),
        rec.run_id.lower(),
        revision,
    )


def _where(query: q.RunQuery) -> tuple[str, list[Any]]:
    """The SQL condition of ``query``'s filters (``q.keeps``), and its arguments."""
    terms: list[str] = []
    args: list[Any] = []
    if query.sweeps:
        terms.append("sweep = 1")
    if query.pipelines:
        terms.append("pipeline = 1")
    if query.experiment is not None:
        terms.append("experiment = ?")
        args.append(query.experiment)
    if query.states:
        terms.append(f"state IN ({', '.join('?' * len(query.states))})")
        args += [str(s) for s in query.states]
    if query.target is not None:
        terms.append("target = ?")
        args.append(query.target)
    if query.created_since is not None:
        terms.append("created_at >= ?")
        args.append(query.created_since)
    if not query.include_children:
        terms.append("parent_id IS NULL")
    if query.parent_id is not None:
        terms.append("parent_id = ?")
        args.append(query.parent_id)
    if query.search:
        terms.append("instr(folded_id, ?) > 0")
        args.append(query.search.lower())
    for key, value in query.tags:
        has = "SELECT 1 FROM tags t WHERE t.run_id = runs.run_id AND t.key = ?"
        args.append(key)
        if value is not None:
            has += " AND t.value = ?"
            args.append(value)
        terms.append(f"EXISTS ({has})")
    return " AND ".join(terms) or "1", args


def _cursor(row: Sequence[Any]) -> q.RunCursor:
    return q.RunCursor(created_at=row[0], run_id=row[1])


class RunIndex:
    """Every stored run's summary, in the SQLite file at ``path`` (None: in memory, one
    connection, for tests and benchmarks)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        target = ":memory:" if path is None else str(path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit off: writes gather into one transaction until :meth:`commit`
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level="DEFERRED")
        if path is not None:
            self._db.execute("PRAGMA journal_mode = WAL")
        # the file is a copy of what the stream holds: a crash may lose its last writes,
        # which the next start reads again from the stream (index_feed.py)
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.executescript(_SCHEMA)
        self._db.commit()
        self._reader = (
            self._db if path is None else sqlite3.connect(target, check_same_thread=False)
        )
        self._reading = threading.Lock()  # one query at a time on the reader
        self._dirty = False

    def close(self) -> None:
        self.commit()
        if self._reader is not self._db:
            self._reader.close()
        self._db.close()

    # --- what the file is a copy of ------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
        self._dirty = True

    @property
    def applied(self) -> int:
        """The runs stream's sequence that every record up to is in the file."""
        return int(self.meta("applied") or 0)

    def reached(self, seq: int) -> None:
        self.set_meta("applied", str(seq))

    def clear(self) -> None:
        """Forget every run (the file is a copy of another stream, or of an older layout)."""
        for table in ("runs", "tags", "metrics", "meta"):
            self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - a fixed table name
        self.set_meta("schema", SCHEMA_VERSION)
        self.commit()

    # --- writes ----------------------------------------------------------------------------

    def update(self, rec: Record, revision: int = 0) -> None:
        """The run as stored at ``revision`` (new or changed); an older record than the one
        held changes nothing."""
        cur = self._db.execute(_UPSERT, row_of(rec, revision))
        self._dirty = True
        if cur.rowcount == 0:
            return  # the file holds a newer record
        self._db.execute("DELETE FROM tags WHERE run_id = ?", (rec.run_id,))
        self._db.execute("DELETE FROM metrics WHERE run_id = ?", (rec.run_id,))
        if rec.tags:
            self._db.executemany(
                "INSERT INTO tags (run_id, key, value) VALUES (?, ?, ?)",
                [(rec.run_id, k, v) for k, v in rec.tags.items()],
            )
        if rec.metrics:
            self._db.executemany(
                "INSERT INTO metrics (run_id, name, value) VALUES (?, ?, ?)",
                [(rec.run_id, k, v) for k, v in rec.metrics.items()],
            )

    def update_all(self, recs: Iterable[m.RunRecord]) -> None:
        for rec in recs:
            self.update(rec)

    def remove(self, run_id: str, revision: int) -> None:
        """The run's key was deleted at ``revision``."""
        cur = self._db.execute(
            "DELETE FROM runs WHERE run_id = ? AND revision <= ?", (run_id, revision)
        )
        if cur.rowcount:
            self._db.execute("DELETE FROM tags WHERE run_id = ?", (run_id,))
            self._db.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
        self._dirty = True

    def commit(self) -> None:
        """Make the writes so far seen by queries (and kept in the file)."""
        if self._dirty:
            self._db.commit()
            self._dirty = False

    def rollback(self) -> None:
        """Drop the writes since the last commit (the feed reads them again)."""
        self._db.rollback()
        self._dirty = False

    # --- queries (call from any one thread at a time, after commit) ---------------------

    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM runs")[0][0])

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._reading:
            return self._reader.execute(sql, args).fetchall()

    def query(self, query: q.RunQuery) -> q.RunPageOrError:
        why = q.problem(query)
        if why is not None:
            return m.ErrorReply(code="bad_request", message=why)
        where, args = _where(query)
        total = self._read(f"SELECT COUNT(*) FROM runs WHERE {where}", args)[0][0]  # noqa: S608
        pick = f"SELECT created_at, run_id FROM runs WHERE {where}"  # noqa: S608
        if query.after is not None:
            shown = self._read(
                f"{pick} AND (created_at, run_id) > (?, ?) ORDER BY created_at, run_id LIMIT ?",
                [*args, query.after.created_at, query.after.run_id, query.limit],
            )
        else:
            before = query.before
            bound = "" if before is None else " AND (created_at, run_id) < (?, ?)"
            extra = [] if before is None else [before.created_at, before.run_id]
            shown = self._read(
                f"{pick}{bound} ORDER BY created_at DESC, run_id DESC LIMIT ?",
                [*args, *extra, query.limit],
            )[::-1]
        if not shown:
            return q.RunPage(run_ids=[], total=total)

        def beyond(op: str, row: Sequence[Any]) -> bool:
            sql = f"SELECT 1 FROM runs WHERE {where} AND (created_at, run_id) {op} (?, ?) LIMIT 1"  # noqa: S608
            return bool(self._read(sql, [*args, row[0], row[1]]))

        return q.RunPage(
            run_ids=[row[1] for row in reversed(shown)],
            total=total,
            older=_cursor(shown[0]) if beyond("<", shown[0]) else None,
            newer=_cursor(shown[-1]) if beyond(">", shown[-1]) else None,
        )

    def experiments(self, query: q.ExperimentsQuery) -> q.ExperimentList:
        states: dict[str, dict[str, int]] = {}
        for name, state, count in self._read(
            "SELECT experiment, state, COUNT(*) FROM runs GROUP BY experiment, state"
        ):
            states.setdefault(name, {})[state] = count
        best = self._best(query)
        found = []
        for name, counts in states.items():
            latest = self._read(
                "SELECT created_at, run_id FROM runs WHERE experiment = ? "
                "ORDER BY created_at DESC, run_id DESC LIMIT 1",
                (name,),
            )[0]
            top = best.get(name)
            found.append(
                q.ExperimentSummary(
                    name=name,
                    runs=sum(counts.values()),
                    states=dict(sorted(counts.items())),
                    latest_run_id=latest[1],
                    latest_created_at=latest[0],
                    best_value=top[0] if top is not None else None,
                    best_run_id=top[1] if top is not None else None,
                )
            )
        found.sort(key=lambda e: (e.latest_created_at, e.latest_run_id, e.name), reverse=True)
        return q.ExperimentList(experiments=found)

    def _best(self, query: q.ExperimentsQuery) -> dict[str, tuple[float, str]]:
        """Per experiment, its best finite value of the query's metric and the run that has
        it (ties: the newer run)."""
        if query.metric is None:
            return {}
        sign = 1.0 if query.goal == "max" else -1.0
        rows = self._read(
            """
            SELECT experiment, value, run_id FROM (
                SELECT r.experiment, x.value, r.run_id, ROW_NUMBER() OVER (
                    PARTITION BY r.experiment
                    ORDER BY x.value * ? DESC, r.created_at DESC, r.run_id DESC
                ) AS n
                FROM metrics x JOIN runs r ON r.run_id = x.run_id
                WHERE x.name = ? AND x.value IS NOT NULL AND abs(x.value) <= ?
            ) WHERE n = 1
            """,
            (sign, query.metric, MAX_FINITE),
        )
        return {name: (value, run_id) for name, value, run_id in rows}


def answer(index: RunIndex, request: q.RunQuery | q.ExperimentsQuery) -> m.Message:
    """The reply to a query of the index."""
    if isinstance(request, q.RunQuery):
        return index.query(request)
    return index.experiments(request)
