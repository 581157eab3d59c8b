"""What Sortie 0.1.0 stored (and what its clients send) still reads with today's types.

``tests/data/v0.1.0/`` holds JSON bytes encoded by the 0.1.0 Structs before the variants
became types (error kinds, cluster providers, SSH settings in one place): KV values of every
kind the scheduler keeps, reports (durable in JetStream across an upgrade) and the requests
that carry SSH settings. Each is decoded here the way the scheduler decodes it, and the
fields are checked one by one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState

DATA = Path(__file__).resolve().parent / "data" / "v0.1.0"
# the error kinds 0.1.0 had; those added later were never stored by it
# kinds added after 0.1.0 have no captured record
LATER = {
    ErrorKind.DISK_FULL,
    ErrorKind.TARGET_DELETED,
    ErrorKind.QUEUE_TIMEOUT,
    ErrorKind.EARLY_TERMINATED,
}
KINDS_V010 = [k for k in ErrorKind if k not in LATER]


def read(name: str, kind: object) -> object:
    msg = codec.decode(kind, (DATA / f"{name}.json").read_bytes())
    assert codec.decode(kind, codec.encode(msg)) == msg  # and it writes back the same
    return msg


def test_every_captured_file_is_checked() -> None:
    checked = {f"run-record-{k}" for k in KINDS_V010} | {f"run-report-{k}" for k in KINDS_V010}
    checked |= {
        "compute-record-process",
        "compute-record-ssh",
        "vm-record",
        "compute-create-ssh",
        "compute-create-process",
        "compute-attach",
        "compute-attach-default",
    }
    assert {p.stem for p in DATA.glob("*.json")} == checked


@pytest.mark.parametrize("kind", KINDS_V010)
def test_run_records_and_reports_keep_their_error_kind(kind: ErrorKind) -> None:
    rec = read(f"run-record-{kind}", m.RunRecord)
    assert isinstance(rec, m.RunRecord)
    assert (rec.run_id, rec.state, rec.attempt, rec.retries_used) == (
        f"r-{kind}",
        RunState.FAILED,
        2,
        1,
    )
    assert rec.error == m.RunError(kind=kind, message=f"a {kind} error")
    assert rec.error is not None and rec.error.kind is kind
    assert rec.exit_code == (3 if kind is ErrorKind.EXIT_CODE else None)
    assert [(h.state, h.attempt, h.reason) for h in rec.history] == [
        (RunState.QUEUED, 1, None),
        (RunState.FAILED, 2, str(kind)),
    ]
    assert (rec.spec.target, rec.spec.max_retries) == ("pool", 2)
    rep = read(f"run-report-{kind}", m.RunReport)
    assert isinstance(rep, m.RunReport) and rep.error is not None and rep.error.kind is kind
    given_back = kind in (ErrorKind.PREEMPTED, ErrorKind.LOST)
    assert rep.state is (RunState.QUEUED if given_back else RunState.FAILED)


def test_a_process_cluster_reads_as_its_variant() -> None:
    rec = read("compute-record-process", m.ComputeRecord)
    assert isinstance(rec, m.ComputeRecord)
    cfg = rec.cluster
    assert isinstance(cfg, m.ProcessCluster) and cfg.provider == "process"
    assert (cfg.vm_size, cfg.max_nodes, cfg.min_nodes) == ("LOCAL_MEDIUM", 3, 1)
    assert (cfg.idle_seconds_before_scaledown, cfg.vm_priority) == (60.0, "lowpriority")
    assert (rec.name, rec.provisioning_state, rec.shape.cpus) == ("pool", "Succeeded", 2)
    assert [(d.action, d.nodes) for d in rec.decisions] == [("scale_up", ["pool-1"])]


def test_an_ssh_pool_reads_as_its_variant_with_its_login() -> None:
    rec = read("compute-record-ssh", m.ComputeRecord)
    assert isinstance(rec, m.ComputeRecord)
    cfg = rec.cluster
    assert isinstance(cfg, m.SshPoolCluster) and cfg.provider == "ssh"
    assert (cfg.vm_size, cfg.max_nodes, cfg.hosts) == ("LOCAL_MEDIUM", 2, ["h1", "h2"])
    assert cfg.ssh == m.SshLogin(
        username="ops",
        ssh_port=2222,
        auth="key",
        known_hosts="/home/ops/.ssh/known_hosts",
        trust_new_host_key=True,
    )
    assert (rec.error_streak, rec.backoff_until) == (1, 6.0)
    assert [e.code for e in rec.provisioning_errors] == ["auth_failed"]


def test_an_attached_machine_reads_with_its_login() -> None:
    rec = read("vm-record", m.VmRecord)
    assert isinstance(rec, m.VmRecord)
    assert (rec.name, rec.vm.address, rec.vm.advertised_url) == (
        "box",
        "10.0.0.5",
        "nats://10.0.0.1:4222",
    )
    assert rec.vm.ssh == m.SshLogin(username="ops", auth="password")
    assert (rec.provisioning_state, rec.link, rec.remote_port) == ("Succeeded", "connected", 40123)
    assert rec.progress == ["attaching", "agent started"]


def test_compute_create_requests_read_as_their_variant() -> None:
    made = read("compute-create-ssh", m.ComputeRequest)
    assert isinstance(made, m.ComputeCreate) and isinstance(made.cluster, m.SshPoolCluster)
    assert made.cluster.hosts == ["h1", "h2"] and made.cluster.ssh.trust_new_host_key
    assert made.secret is not None and made.secret.private_key == "KEY"
    local = read("compute-create-process", m.ComputeRequest)
    assert isinstance(local, m.ComputeCreate) and isinstance(local.cluster, m.ProcessCluster)
    assert (local.name, local.cluster.min_nodes, local.secret) == ("pool", 1, None)


def test_an_attach_request_keeps_its_trust_setting_in_the_login() -> None:
    # 0.1.0 sent trust_new_host_key beside vm; today it is one of the SSH settings (vm.ssh)
    for kind in (m.ComputeRequest, m.ComputeAttach):
        req = read("compute-attach", kind)
        assert isinstance(req, m.ComputeAttach)
        assert req.vm.ssh.trust_new_host_key
        assert (req.name, req.vm.address, req.vm.ssh.username) == ("box", "10.0.0.5", "ops")
        assert req.secret.password == "hunter2"
        plain = read("compute-attach-default", kind)
        assert isinstance(plain, m.ComputeAttach) and not plain.vm.ssh.trust_new_host_key
