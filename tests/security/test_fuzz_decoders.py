"""Every decoder on every subject, fuzzed at the pure boundary (Hypothesis).

Any bytes give a typed message or a structured refusal (never another exception); where a
reply is expected it is an ``ErrorReply(code="bad_request")`` the client can read; a request
the core refuses changes nothing; and nothing that decodes, however odd its values, makes
the core raise or stall.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sortie.agents.daemon import read_command
from sortie.agents.metrics_fifo import parse_line, parse_metric
from sortie.proto import codec, notes, subjects
from sortie.proto import messages as m
from sortie.proto.queue import QueueRequest
from sortie.proto.schema import TYPES
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.events import API_TYPES, read_heartbeat, read_report, read_request
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Timing
from sortie.scheduler.sizes import load_catalog
from tests.builders import SNAP, heartbeat, spec
from tests.security.wire import REPLY_TYPES, typed, wire_bytes

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
CATALOG = load_catalog(None)
CFG = core.Config(
    timing=Timing(lease_s=10, assign_ack_s=3),
    catalog=CATALOG,
    providers=frozenset({"process", "ssh"}),
)
# Values that mean something to the receiver, so the fuzzing gets past the first lookup.
HINTS: dict[str, st.SearchStrategy[Any]] = {
    "target": st.sampled_from(["local", "pool", "box"]),
    "vm_size": st.sampled_from(sorted(CATALOG)),
    "name": st.sampled_from(["pool", "box", "new-pool"]),
    "run_id": st.sampled_from(["r1", "r2", "rX"]),
    "agent_id": st.sampled_from(["a1", "a2", "pool-n1", "box"]),
    "incarnation": st.sampled_from(["i1", "i2"]),
    "snapshot_id": st.just(SNAP),
    "experiment": st.just("exp"),
    "script": st.just("train.py"),
    "provider": st.sampled_from(["process", "ssh"]),
    "attempt": st.sampled_from([0, 1, 2]),
    "hosts": st.just(["h1", "h2"]),
}
WIRE_TYPES = {**TYPES, "SecretEnv": m.SecretEnv, "Assign": m.Assign}


def test_every_api_subject_has_a_reply_type() -> None:
    assert set(REPLY_TYPES) == set(API_TYPES)


# --- decoders --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WIRE_TYPES))
@FUZZ
@given(data=st.data())
def test_every_decoder_gives_the_type_or_says_why(name: str, data: st.DataObject) -> None:
    kind = WIRE_TYPES[name]
    raw = data.draw(wire_bytes(kind))
    try:
        msg = codec.decode(kind, raw)
    except codec.BadMessage as exc:
        assert str(exc).startswith(f"could not decode {getattr(kind, '__name__', kind)}")
        return
    assert isinstance(msg, kind)
    assert codec.decode(kind, codec.encode(msg)) == msg  # what decodes, re-encodes


@FUZZ
@given(
    subject=st.sampled_from([*sorted(API_TYPES), "sortie.api.nope", "sortie.api"]),
    data=st.data(),
)
def test_api_requests_are_typed_or_answered_bad_request(subject: str, data: st.DataObject) -> None:
    kind = API_TYPES.get(subject, m.SubmitRequest)
    raw = data.draw(wire_bytes(kind, HINTS))
    got = read_request(subject, raw)
    if isinstance(got, m.ErrorReply):
        assert got.code == "bad_request" and got.message
        if subject in REPLY_TYPES:  # the client reads the refusal as its reply type
            assert codec.decode(REPLY_TYPES[subject], codec.encode(got)) == got
        else:
            assert "unknown API subject" in got.message
    else:
        assert subject in API_TYPES and isinstance(got, API_TYPES[subject])


@FUZZ
@given(raw=wire_bytes(m.Heartbeat, HINTS), on=st.sampled_from(["a1", "a2", "box"]))
def test_heartbeats_are_typed_and_on_their_own_subject_or_ignored(raw: bytes, on: str) -> None:
    got = read_heartbeat(subjects.heartbeat(on), raw)
    assert isinstance(got, str) or (isinstance(got, m.Heartbeat) and got.agent_id == on)


@FUZZ
@given(raw=wire_bytes(m.RunReport, HINTS), on=st.sampled_from(["a1", "a2", "box"]))
def test_reports_are_typed_and_on_their_own_subject_or_ignored(raw: bytes, on: str) -> None:
    got = read_report(subjects.report(on), raw)
    assert isinstance(got, str) or (isinstance(got, m.RunReport) and got.agent_id == on)


@FUZZ
@given(raw=wire_bytes(m.AgentCommand, HINTS))
def test_agent_commands_are_checked_or_ignored(raw: bytes) -> None:
    got = read_command(raw)
    if isinstance(got, str):
        assert got
        return
    assert isinstance(got, m.Assign | m.Cancel | m.Preempt | m.Retire)
    if not isinstance(got, m.Preempt | m.Retire):
        assert subjects.check_token("run id", got.run_id) and got.attempt >= 1
    if isinstance(got, m.Assign):
        assert 0 <= got.rank < got.world_size


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"type":"assign"}', "could not decode"),
        (b'{"type":"cancel","run_id":"../../etc","attempt":1}', "run id '../../etc' is not valid"),
        (b'{"type":"cancel","run_id":"r1","attempt":0}', "attempt 0 of run r1"),
        (b'{"type":"launch","run_id":"r1"}', "could not decode"),
    ],
)
def test_agent_command_refusals_say_what_was_wrong(raw: bytes, why: str) -> None:
    got = read_command(raw)
    assert isinstance(got, str) and why in got


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), wire_bytes(m.MetricPoint)))
def test_metric_lines_from_the_script_are_points_or_reasons(raw: bytes) -> None:
    got = parse_metric(raw)
    assert isinstance(got, str) or (isinstance(got, m.MetricPoint) and got.name)


@FUZZ
@given(
    raw=st.one_of(st.binary(max_size=200), wire_bytes(notes.ScriptNote), wire_bytes(m.MetricPoint))
)
def test_lines_from_the_script_are_points_notes_or_reasons(raw: bytes) -> None:
    got = parse_line(raw)
    kinds = (str, m.MetricPoint, notes.TagsSet, notes.PropertiesAdded, notes.ChildStarted)
    assert isinstance(got, (*kinds, notes.ChildEnded))


@FUZZ
@given(note=typed(notes.RunNote, HINTS))
def test_a_note_from_outside_the_current_attempt_changes_no_run(note: notes.RunNote) -> None:
    s = world()
    rec = s.runs.get(note.run_id)
    member = rec is not None and any(g.agent_id == note.agent_id for g in (rec.gang or []))
    if rec is not None and rec.attempt == note.attempt and member:
        return  # the holder's note: that one may change the run
    before = copy.deepcopy(s.runs)
    cmds = core.handle(s, core.NoteSeen(note=note), 1.0, CFG)
    assert s.runs == before and not s.runs.changed
    assert all(isinstance(c, core.Log) for c in cmds)


# --- the core: decodable but hostile ---------------------------------------------------------


def world() -> SchedulerState:
    """Two agents, a running and a queued run, a cluster with a node, an attached machine."""
    s = SchedulerState(started_at=0.0)
    for agent in ("a1", "a2"):
        core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(agent_id=agent, cpus=1)), 0.0, CFG)
    for run_id in ("r1", "r2"):
        req = m.SubmitRequest(spec=spec())
        core.handle(s, core.Submitted(request=req, run_id=run_id, reply_to="x"), 0.0, CFG)
    pool = m.ComputeCreate(
        name="pool", cluster=m.ProcessCluster(vm_size="local_medium", max_nodes=2, min_nodes=1)
    )
    core.handle(s, core.ComputeAsked(request=pool, reply_to="x"), 0.0, CFG)
    box = m.ComputeAttach(
        name="box",
        vm=m.VmConfig(address="10.0.0.9", ssh=m.SshLogin(username="u", auth="password")),
        secret=m.SshSecret(password="pw"),
    )
    core.handle(s, core.ComputeAsked(request=box, reply_to="x"), 0.0, CFG)
    core.decide(s, 0.0, CFG, lambda c: f"{c}-n1")
    core.handle(
        s,
        core.ReportSeen(
            report=m.RunReport(
                agent_id="a1",
                incarnation="i1",
                run_id="r1",
                attempt=1,
                state=RunState.STARTING,
                at=0.5,
            )
        ),
        0.5,
        CFG,
    )
    for table in (s.runs, s.agents, s.computes, s.nodes, s.vms):
        table.take_changes()
    return s


def _ids(cluster: str) -> str:
    return f"{cluster}-n9"


REQUESTS = st.one_of(
    typed(m.SubmitRequest, HINTS).map(
        lambda r: core.Submitted(request=r, run_id="rN", reply_to="rep")
    ),
    typed(m.CancelRequest, HINTS).map(lambda r: core.CancelAsked(run_id=r.run_id, reply_to="rep")),
    typed(m.ComputeRequest, HINTS).map(lambda r: core.ComputeAsked(request=r, reply_to="rep")),
    typed(m.AgentRequest, HINTS).map(lambda r: core.AgentAsked(request=r, reply_to="rep")),
    typed(m.WhyRequest, HINTS).map(lambda r: core.WhyAsked(run_id=r.run_id, reply_to="rep")),
    typed(QueueRequest, HINTS).map(lambda r: core.QueueAsked(request=r, reply_to="rep")),
    st.just(core.TargetsAsked(reply_to="rep")),
    typed(notes.RunTagRequest, HINTS).map(lambda r: core.TagAsked(request=r, reply_to="rep")),
)
OBSERVATIONS = st.one_of(
    typed(m.Heartbeat, HINTS).map(lambda h: core.HeartbeatSeen(heartbeat=h)),
    typed(m.RunReport, HINTS).map(lambda r: core.ReportSeen(report=r)),
    typed(notes.RunNote, HINTS).map(lambda n: core.NoteSeen(note=n)),
)


def _check_storable(s: SchedulerState) -> None:
    for rec in s.runs.values():
        assert codec.decode(m.RunRecord, codec.encode(rec)) == rec
    for c in s.computes.values():
        codec.encode(c)
    for a in s.agents.values():
        codec.encode(a.record())


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(event=REQUESTS)
def test_every_request_gets_one_reply_and_a_refusal_changes_nothing(event: core.Event) -> None:
    s = world()
    before = copy.deepcopy(s)
    cmds = core.handle(s, event, 1.0, CFG)
    replies = [c for c in cmds if isinstance(c, core.Reply)]
    assert len(replies) == 1 and replies[0].reply_to == "rep"
    reply = replies[0].message
    assert isinstance(reply, m.Message)
    codec.encode(reply)
    if isinstance(reply, m.ErrorReply):
        assert reply.message
        assert s == before, f"refused with {reply.message!r} but the state changed"
    core.decide(s, 2.0, CFG, _ids)  # whatever was accepted, the next cycle copes
    _check_storable(s)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=st.lists(st.one_of(OBSERVATIONS, REQUESTS), min_size=1, max_size=6))
def test_no_sequence_of_decodable_messages_makes_the_core_raise(events: list[core.Event]) -> None:
    s = world()
    for i, event in enumerate(events):
        core.handle(s, event, 1.0 + i, CFG)
        cmds = core.decide(s, 1.0 + i, CFG, _ids)
        for c in cmds:
            if isinstance(c, core.SendToAgent) and isinstance(c.command, m.Assign):
                assert c.command.secret_env is None  # only the daemon adds secret values
    _check_storable(s)


@FUZZ
@given(report=typed(m.RunReport, HINTS))
def test_a_report_from_outside_the_current_attempt_changes_no_run(report: m.RunReport) -> None:
    s = world()
    rec = s.runs.get(report.run_id)
    member = rec is not None and any(g.agent_id == report.agent_id for g in (rec.gang or []))
    if rec is not None and rec.attempt == report.attempt and member:
        return  # a member's report of the current attempt: that one may change the run
    before = copy.deepcopy(s.runs)
    cmds = core.handle(s, core.ReportSeen(report=report), 1.0, CFG)
    assert s.runs == before and not s.runs.changed
    assert all(
        isinstance(c, core.Log)
        or (isinstance(c, core.SendToAgent) and isinstance(c.command, m.Cancel))
        for c in cmds
    )


def test_an_absurd_cluster_size_is_refused_not_attempted() -> None:
    s = world()
    before = copy.deepcopy(s)
    huge = m.ComputeCreate(
        name="huge",
        cluster=m.ProcessCluster(vm_size="local_medium", max_nodes=10**18, min_nodes=10**18),
    )
    (reply,) = [
        c.message
        for c in core.handle(s, core.ComputeAsked(request=huge, reply_to="r"), 1.0, CFG)
        if isinstance(c, core.Reply)
    ]
    assert isinstance(reply, m.ErrorReply) and "split the pool" in reply.message
    assert s == before
    grow = m.ComputeUpdate(name="pool", max_nodes=10**9)
    (reply,) = [
        c.message
        for c in core.handle(s, core.ComputeAsked(request=grow, reply_to="r"), 1.0, CFG)
        if isinstance(c, core.Reply)
    ]
    assert isinstance(reply, m.ErrorReply) and s == before
