"""Attached machines through the core: checks, events, and where the secret goes (nowhere)."""

from __future__ import annotations

import msgspec

from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.engines import SlurmEngine, SparkEngine
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.events import read_request
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Timing
from tests.builders import spec

CFG = core.Config(timing=Timing(lease_s=10))
SECRET = m.SshSecret(password="hunter2-very-secret")
LOGIN = m.SshLogin(username="alice", auth="password")


def attach(s: SchedulerState, name: str = "lab-box", **kw: object) -> list[core.Command]:
    fields: dict[str, object] = {
        "name": name,
        "vm": m.VmConfig(address="10.0.0.5", ssh=LOGIN),
        "secret": SECRET,
    }
    fields.update(kw)
    req = m.ComputeAttach(**fields)
    return core.handle(s, core.ComputeAsked(request=req, reply_to="r"), 1.0, CFG)


def reply_of(cmds: list[core.Command]) -> msgspec.Struct:
    (reply,) = [c.message for c in cmds if isinstance(c, core.Reply)]
    return reply


def test_attach_records_the_machine_and_hands_the_secret_only_to_the_command() -> None:
    s = SchedulerState()
    cmds = attach(s)
    (cmd,) = [c for c in cmds if isinstance(c, core.AttachVm)]
    assert cmd.secret == SECRET and "hunter2" not in repr(cmd)
    reply = reply_of(cmds)
    assert isinstance(reply, m.VmReply) and reply.vm.provisioning_state == "Creating"
    stored = codec.encode(s.vms["lab-box"])
    assert b"hunter2" not in stored and b"hunter2" not in codec.encode(reply)
    assert "lab-box" in s.known_targets()
    assert all("hunter2" not in repr(c) for c in cmds)


def test_an_engine_attach_keeps_its_engine_on_the_record_and_the_command() -> None:
    s = SchedulerState()
    engine = SlurmEngine(partition="gpu")
    cmds = attach(s, "hpc-login", vm=m.VmConfig(address="h", ssh=LOGIN, engine=engine))
    (cmd,) = [c for c in cmds if isinstance(c, core.AttachVm)]
    assert cmd.vm.engine == engine and s.vms["hpc-login"].vm.engine == engine


def test_attach_refusals() -> None:
    s = SchedulerState()
    cases = [
        ({"name": "x"}, "2 to 16 characters"),
        ({"name": "local"}, "exists"),
        ({"vm": m.VmConfig(address=" ", ssh=LOGIN)}, "an address is required"),
        (
            {"vm": m.VmConfig(address="h", ssh=m.SshLogin(username="", auth="password"))},
            "a username is required",
        ),
        (
            {"vm": m.VmConfig(address="h", ssh=m.SshLogin(username="a", auth="key"))},
            "key authentication needs a private key",
        ),
        (
            {
                "vm": m.VmConfig(
                    address="h", ssh=m.SshLogin(username="a", ssh_port=0, auth="password")
                )
            },
            "not a port number",
        ),
        ({"secret": m.SshSecret()}, "password authentication needs a password"),
        (
            # the SDK's attach is checked as the CLI's (proto.engines.problem)
            {"vm": m.VmConfig(address="h", ssh=LOGIN, engine=SlurmEngine(qos="a b"))},
            "--qos 'a b' is not a Slurm name",
        ),
        (
            {"vm": m.VmConfig(address="h", ssh=LOGIN, engine=SparkEngine(master="mesos://m"))},
            "spark://HOST:PORT, yarn, or local[N]",
        ),
    ]
    for kw, expected in cases:
        reply = reply_of(attach(s, **kw))
        assert isinstance(reply, m.ErrorReply) and expected in reply.message, (kw, reply)
    assert s.vms == {}
    attach(s)
    assert isinstance(reply_of(attach(s)), m.ErrorReply)  # the same name twice


def test_progress_success_failure_and_link_states() -> None:
    s = SchedulerState()
    attach(s)
    core.handle(s, core.VmProgress(name="lab-box", line="copying 30 wheels"), 2.0, CFG)
    core.handle(s, core.VmAttached(name="lab-box", remote_port=40123), 3.0, CFG)
    rec = s.vms["lab-box"]
    assert rec.provisioning_state == "Succeeded" and rec.remote_port == 40123
    assert rec.progress[-2:] == ["copying 30 wheels", "agent started"]
    core.handle(s, core.VmLink(name="lab-box", link="reconnecting"), 4.0, CFG)
    assert s.vms["lab-box"].link == "reconnecting"
    core.handle(s, core.VmLink(name="lab-box", link="connected"), 5.0, CFG)
    assert s.vms["lab-box"].link == "connected"

    attach(s, name="bad-box")
    core.handle(
        s,
        core.VmFailed(
            name="bad-box", code="python_too_old", message="found Python 3.9.2 at /usr/bin/python3"
        ),
        2.0,
        CFG,
    )
    bad = s.vms["bad-box"]
    assert bad.provisioning_state == "Failed"
    assert bad.provisioning_errors[0].code == "python_too_old"


def test_detach_refused_with_active_runs_unless_forced() -> None:
    s = SchedulerState()
    attach(s)
    core.handle(s, core.VmAttached(name="lab-box"), 2.0, CFG)
    req = m.SubmitRequest(spec=spec(target="lab-box"))
    core.handle(s, core.Submitted(request=req, run_id="r1", reply_to=""), 3.0, CFG)
    refused = reply_of(
        core.handle(
            s, core.ComputeAsked(request=m.ComputeDetach(name="lab-box"), reply_to="r"), 4.0, CFG
        )
    )
    assert isinstance(refused, m.ErrorReply)
    assert "1 queued run(s) target lab-box (r1)" in refused.message
    cmds = core.handle(
        s,
        core.ComputeAsked(
            request=m.ComputeDetach(name="lab-box", force=True, keep_files=True), reply_to="r"
        ),
        5.0,
        CFG,
    )
    r1 = s.runs["r1"]
    assert r1.state is RunState.FAILED and r1.error is not None
    assert r1.error.kind is ErrorKind.TARGET_DELETED
    (cmd,) = [c for c in cmds if isinstance(c, core.DetachVm)]
    assert cmd.keep_files and s.vms["lab-box"].provisioning_state == "Deleting"
    core.handle(s, core.VmDetached(name="lab-box"), 6.0, CFG)
    assert "lab-box" not in s.vms and s.vms.deleted == {"lab-box"}
    assert "lab-box" not in s.known_targets()


def test_delete_of_a_machine_points_to_detach_and_show_works() -> None:
    s = SchedulerState()
    attach(s)
    reply = reply_of(
        core.handle(
            s, core.ComputeAsked(request=m.ComputeDelete(name="lab-box"), reply_to="r"), 2.0, CFG
        )
    )
    assert isinstance(reply, m.ErrorReply) and "sortie compute detach lab-box" in reply.message
    shown = reply_of(
        core.handle(
            s, core.ComputeAsked(request=m.ComputeShow(name="lab-box"), reply_to="r"), 2.0, CFG
        )
    )
    assert isinstance(shown, m.VmReply)
    listed = reply_of(
        core.handle(s, core.ComputeAsked(request=m.ComputeList(), reply_to="r"), 2.0, CFG)
    )
    assert isinstance(listed, m.ComputeListReply) and [v.name for v in listed.vms] == ["lab-box"]


def test_ssh_pool_cluster_needs_hosts_login_and_secret() -> None:
    s = SchedulerState()
    cfg = core.Config(
        catalog={"S": m.NodeShape(name="S", cpus=1, memory_mb=1024)},
        providers=frozenset({"process", "ssh"}),
    )

    def create(**kw: object) -> msgspec.Struct:
        cluster: dict[str, object] = {
            "vm_size": "S",
            "max_nodes": 2,
            "hosts": ["h1", "h2"],
            "ssh": LOGIN,
        }
        secret = kw.pop("secret", SECRET)
        cluster.update(kw)
        req = m.ComputeCreate(name="pool", cluster=m.SshPoolCluster(**cluster), secret=secret)
        cmds = core.handle(s, core.ComputeAsked(request=req, reply_to="r"), 1.0, cfg)
        saves = [c for c in cmds if isinstance(c, core.SaveSecret)]
        assert all(c.secret == SECRET for c in saves)
        return reply_of(cmds)

    for kw, expected in [
        ({"hosts": []}, "needs its machines"),
        ({"max_nodes": 3}, "more than the pool's 2 host(s)"),
        ({"secret": None}, "credentials are required"),
    ]:
        reply = create(**kw)
        assert isinstance(reply, m.ErrorReply) and expected in reply.message, (kw, reply)
    ok = create()
    assert isinstance(ok, m.ComputeReply)
    assert b"hunter2" not in codec.encode(s.computes["pool"])
    # an ssh pool without a login is not a request at all: the reader refuses it
    raw = b'{"type":"compute_create","name":"p2","cluster":{"provider":"ssh","vm_size":"S",'
    raw += b'"max_nodes":1,"hosts":["h1"]}}'
    refused = read_request(subjects.API_COMPUTE, raw)
    assert isinstance(refused, m.ErrorReply) and refused.code == "bad_request"
    assert "missing required field `ssh`" in refused.message, refused
