"""The real scheduler on a real broker answers run index queries: stored runs (ended ones too)
are in its index from the start, runs it writes and ended runs it tags are updated in it, and
a restarted scheduler answers the same."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import open_bus
from sortie.client.client import Client
from sortie.client.runconfig import ScriptRunConfig
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto import run_index as q
from sortie.proto.states import RunState
from sortie.scheduler.daemon import SchedulerConfig
from tests.builders import record, spec
from tests.harness import scheduler_running


def scheduler(broker: BrokerProcess, data_dir: Path) -> AbstractAsyncContextManager[None]:
    return scheduler_running(SchedulerConfig(url=broker.url, data_dir=data_dir))


async def ids(client: Client, query: q.RunQuery) -> tuple[list[str], int]:
    records, page = await client.query_runs(query)
    assert [r.run_id for r in records] == page.run_ids  # the records of the page, in order
    return page.run_ids, page.total


async def test_the_scheduler_answers_from_its_index_across_a_restart(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    bus = await open_bus(broker.url, "writer", create=True)
    for i, state in enumerate([RunState.COMPLETED, RunState.FAILED, RunState.COMPLETED]):
        rec = record(
            f"old_{i}",
            state,
            spec=spec(experiment="old"),
            created_at=1000.0 + i,
            metrics={"loss": 1.0 - i / 10},
        )
        await bus.runs.put(rec.run_id, codec.encode(rec))
    child = record("old_0_kid", RunState.COMPLETED, created_at=1000.5, parent_id="old_0")
    await bus.runs.put(child.run_id, codec.encode(child))
    await bus.close()
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("print(1)\n")
    async with scheduler(broker, tmp_path / "s"), await Client.connect(broker.url) as client:
        assert await ids(client, q.RunQuery(limit=2)) == (["old_2", "old_1"], 4)
        assert [r.run_id for r in await client.children("old_0")] == ["old_0_kid"]
        top = q.RunQuery(include_children=False)
        new = await client.submit(ScriptRunConfig(source_directory=src, script="t.py"))
        listed, total = await ids(client, top)
        assert (listed, total) == ([new.run_id, "old_2", "old_1", "old_0"], 4)  # newest first
        await client.tag_run("old_0", {"best": "yes"})  # an ended run: tagged in the store
        assert await ids(client, q.RunQuery(tags=[("best", None)])) == (["old_0"], 1)
        assert await ids(client, q.RunQuery(states=[RunState.QUEUED])) == ([new.run_id], 1)
        assert await ids(client, q.RunQuery(search="OLD_1")) == (["old_1"], 1)
    async with scheduler(broker, tmp_path / "s"), await Client.connect(broker.url) as client:
        assert await ids(client, q.RunQuery(tags=[("best", "yes")])) == (["old_0"], 1)
        assert await ids(client, q.RunQuery(experiment="old", limit=1)) == (["old_2"], 3)
        found = await client.experiments(q.ExperimentsQuery(metric="loss", goal="min"))
        old = next(e for e in found.experiments if e.name == "old")
        assert (old.runs, old.states) == (3, {"Completed": 2, "Failed": 1})
        assert (old.best_run_id, old.best_value) == ("old_2", 0.8)
        refused = await client.bus.nc.request(
            subjects.API_RUNS_QUERY, codec.encode(q.RunQuery(limit=0)), timeout=10
        )
        assert codec.decode(q.RunPageOrError, refused.data) == m.ErrorReply(
            code="bad_request", message="a page holds 1 to 1000 runs (limit 0 asked)"
        )
