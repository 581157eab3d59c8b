"""The run page's small rules, without a browser: the log file's lines, the rank and resume
parameters, what counts as a text file, and the facts the page is given."""

from __future__ import annotations

import json

import msgspec
import pytest
from starlette.exceptions import HTTPException

from sortie.proto import messages as m
from sortie.proto.engines import EngineJob
from sortie.proto.states import RunState
from sortie.web.runpage import facts
from sortie.web.runpage.files import TEXT_CAP, as_text
from sortie.web.runpage.logs import text_line
from sortie.web.runpage.reading import after_seq


@pytest.mark.parametrize(
    ("rank", "stream", "ranked", "expected"),
    [
        (0, "stdout", False, "hello\n"),
        (1, "stderr", True, "[rank 1] hello\n"),
        (0, "system", False, "[sortie] hello\n"),
        (2, "system", True, "[rank 2] [sortie] hello\n"),
    ],
)
def test_a_downloaded_line_reads_as_sortie_run_logs_prints_it(
    rank: int, stream: str, ranked: bool, expected: str
) -> None:
    line = m.LogLine(t=1.0, stream=stream, text="hello")  # type: ignore[arg-type]  # the table's literal
    assert text_line(rank, line, ranked) == expected


@pytest.mark.parametrize(("given", "expected"), [(None, 0), ("", 0), ("41", 41), ("-3", 0)])
def test_a_reconnecting_page_resumes_after_its_last_sequence(
    given: str | None, expected: int
) -> None:
    assert after_seq(given) == expected


def test_a_resume_id_that_is_not_a_sequence_is_refused_saying_so() -> None:
    with pytest.raises(HTTPException) as refused:
        after_seq("abc")
    assert refused.value.status_code == 400 and "stream sequence" in str(refused.value.detail)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"print('hi')\n", "print('hi')\n"),
        ("héllo".encode(), "héllo"),
        (b"\x00\x01\x02", None),  # a NUL: binary
        (b"\xff\xfe\xfd text", None),  # not UTF-8
        # a character cut by the size cap is left out, the rest is text
        (b"a" * (TEXT_CAP - 1) + "é".encode()[:1], "a" * (TEXT_CAP - 1)),
    ],
)
def test_what_the_page_shows_as_text(data: bytes, expected: str | None) -> None:
    assert as_text(data) == expected


def test_the_live_facts_of_a_record() -> None:
    spec = m.RunSpec(
        experiment="e",
        script="train.py",
        snapshot_id="ab" * 32,
        env_vars={"PLAIN": "1"},
        secret_env_names=["API_KEY"],
    )
    rec = m.RunRecord(
        run_id="r_1",
        spec=spec,
        state=RunState.RUNNING,
        attempt=2,
        created_at=1.0,
        gang=[m.GangMember(rank=0, agent_id="a1", incarnation="i", hostname="h1")],
        history=[m.StateChange(state=RunState.QUEUED, at=1.0, attempt=2, reason="agent lost")],
    )
    live = facts.live(rec, 10.0)
    assert live["state"] == "Running" and not live["terminal"] and live["attempt"] == 2
    assert live["agents"] == [{"rank": 0, "agent": "a1", "host": "h1"}]
    assert live["history"] == [{"state": "Queued", "at": 1.0, "attempt": 2, "reason": "agent lost"}]
    assert ("script", "train.py") in facts.details(spec)
    assert live["engine_job"] is None and live["engine_wait"] is None


def test_the_live_facts_of_a_run_handed_to_slurm_say_its_job_and_its_wait_in_the_queue() -> None:
    spec = m.RunSpec(experiment="e", script="train.py", snapshot_id="ab" * 32, target="hpc")
    since = 1_700_000_000.0  # 22:13:20 UTC
    pending = EngineJob(
        engine="slurm", job_id="1234", state="PENDING", reason="Resources", since=since
    )
    rec = m.RunRecord(
        run_id="r_2",
        spec=spec,
        state=RunState.STARTING,
        attempt=1,
        created_at=since - 5,
        agent_id="hpc",
        engine_job=pending,
    )
    live = facts.live(rec, since + 180)
    assert (
        live["engine_job"] == "slurm job 1234: PENDING (Resources) since 22:13:20 UTC (3 min ago)"
    )
    assert live["engine_wait"] == "waiting in slurm's queue: Resources"
    assert live["state"] == "Queued" and not live["terminal"]  # queued in Slurm
    json.dumps(live)  # sent as the page's JSON as it is
    running = msgspec.structs.replace(
        rec,
        state=RunState.RUNNING,
        engine_job=EngineJob(engine="slurm", job_id="1234", state="RUNNING", since=since + 60),
    )
    live = facts.live(running, since + 120)
    assert live["engine_job"] == "slurm job 1234: RUNNING since 22:14:20 UTC (60 s ago)"
    assert live["engine_wait"] is None  # it no longer waits
    assert live["state"] == "Running"
