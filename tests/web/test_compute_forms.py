"""The compute page's forms and snapshot, without a browser: what each form becomes, what it
refuses (saying what to change, never quoting a secret), and the rows the page draws."""

from __future__ import annotations

import re

import msgspec
import pytest

from sortie.proto import messages as m
from sortie.proto.engines import SlurmEngine, SparkEngine
from sortie.web import compute_forms as forms
from sortie.web.compute_data import snapshot

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-body\n-----END OPENSSH PRIVATE KEY-----\n"


def attach_form(**fields: object) -> forms.AttachForm:
    base: dict[str, object] = {"name": "lab-box", "address": "10.0.0.5", "username": "me"}
    return forms.AttachForm(**{**base, **fields})  # type: ignore[arg-type]  # test builder


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({}, "credentials are required"),
        ({"password": "pw-1", "private_key": KEY}, "either a private key file or a password"),
        ({"passphrase": "pp-1"}, "a passphrase goes with a private key file"),
        ({"password": "pw-1", "username": "  "}, "give the user to log in as"),
        ({"password": "pw-1", "address": ""}, "give the machine's address"),
        ({"password": "pw-1", "name": ""}, "give the machine a name"),
        ({"password": "pw-1", "ssh_port": 70000}, "SSH port 70000 is not a port"),
    ],
)
def test_an_attach_form_that_cannot_be_sent_says_what_to_change(
    fields: dict[str, object], refusal: str
) -> None:
    with pytest.raises(forms.FormError, match=refusal) as caught:
        forms.attach_request(attach_form(**fields))
    for secret in ("pw-1", "pp-1", "secret-key-body"):
        assert secret not in str(caught.value)


def test_an_attach_form_becomes_the_cli_s_request_with_the_fingerprint_pinned() -> None:
    form = attach_form(private_key=KEY, passphrase="pp-1", host_key_fingerprint="SHA256:abc")
    req = forms.attach_request(form)
    assert req.vm.address == "10.0.0.5" and req.vm.ssh.auth == "key"
    assert req.vm.ssh.host_key_fingerprint == "SHA256:abc"
    assert not req.vm.ssh.trust_new_host_key
    assert req.secret == m.SshSecret(private_key=KEY, passphrase="pp-1")
    assert "pp-1" not in repr(form) and "secret-key-body" not in repr(form)
    by_password = forms.attach_request(attach_form(password="pw-1"))
    assert by_password.vm.ssh.auth == "password"
    assert by_password.secret == m.SshSecret(password="pw-1")


def test_a_form_that_does_not_decode_names_the_field_not_the_value() -> None:
    body = b'{"name": "x", "address": "h", "username": "u", "password": 12345678}'
    with pytest.raises(forms.FormError, match=r"\$\.password") as caught:
        forms.decode(body, forms.AttachForm)
    assert "12345678" not in str(caught.value)
    with pytest.raises(forms.FormError, match="unknown field"):
        forms.decode(b'{"force": true, "extra": 1}', forms.DeleteForm)


def test_create_and_update_forms_become_the_cli_s_requests() -> None:
    create = forms.decode(
        b'{"name": " pool-a ", "vm_size": "LOCAL_SMALL", "max_nodes": 3, "min_nodes": 1,'
        b' "vm_priority": "lowpriority"}',
        forms.CreateForm,
    )
    assert forms.create_request(create) == m.ComputeCreate(
        name="pool-a",
        cluster=m.ProcessCluster(
            vm_size="LOCAL_SMALL", max_nodes=3, min_nodes=1, vm_priority="lowpriority"
        ),
    )
    update = forms.UpdateForm(max_nodes=5)
    assert forms.update_request("pool-a", update) == m.ComputeUpdate(name="pool-a", max_nodes=5)
    with pytest.raises(forms.FormError, match="nothing to change"):
        forms.update_request("pool-a", forms.UpdateForm())


def test_the_snapshot_has_one_row_per_target_local_first() -> None:
    cluster = m.ComputeRecord(
        name="pool-a",
        cluster=m.ProcessCluster(vm_size="LOCAL_SMALL", max_nodes=3, min_nodes=1),
        shape=m.NodeShape(name="LOCAL_SMALL", cpus=1, memory_mb=1024),
        provisioning_state="Succeeded",
        provisioning_errors=[m.ProvisioningError(at=1.0, code="node_failed", message="boom")],
        created_at=0.0,
    )
    info = m.ComputeInfo(compute=cluster, counts=m.NodeCounts(current=1, target=2))
    vm = m.VmRecord(
        name="lab-box",
        vm=m.VmConfig(address="10.0.0.5", ssh=m.SshLogin(username="me", auth="password")),
        created_at=0.0,
    )
    targets = [
        m.TargetInfo(name="pool-a", kind="agents", agents=1),
        m.TargetInfo(name="local", kind="local", agents=1),
        m.TargetInfo(name="gpu", kind="agents", agents=0),
    ]
    snap = snapshot(targets, [info], [vm], at=5.0)
    rows = {r.name: r for r in snap.targets}
    assert [r.name for r in snap.targets] == ["local", "gpu", "lab-box", "pool-a"]
    assert rows["pool-a"].kind == "cluster" and rows["pool-a"].nodes == "1/2 (1-3)"
    assert rows["pool-a"].error == "boom" and rows["pool-a"].agents == 1
    assert rows["lab-box"].detail == "me@10.0.0.5:22 (password)"
    assert rows["lab-box"].state == "Creating"
    assert rows["gpu"].state == "No agent" and rows["local"].state == "Ready"
    encoded = msgspec.json.decode(msgspec.json.encode(snap))
    assert encoded["clusters"][0]["nodes"]["target"] == 2
    assert encoded["machines"][0]["auth"] == "password"


def test_an_attach_form_of_type_slurm_or_spark_carries_the_engine_as_the_cli_s_request() -> None:
    slurm = forms.attach_request(
        attach_form(password="pw-1", type="slurm", partition=" debug ", qos="", master="yarn")
    )
    # the other type's fields are not read; an empty one is the engine's default
    assert slurm.vm.engine == SlurmEngine(partition="debug")
    spark = forms.attach_request(
        attach_form(
            password="pw-1",
            type="spark",
            master="spark://127.0.0.1:7077",
            conf="spark.executor.memory=512m\n\n  spark.a=b=c \n",
            ui_port=18080,
            partition="ignored",
        )
    )
    assert spark.vm.engine == SparkEngine(
        master="spark://127.0.0.1:7077",
        conf={"spark.executor.memory": "512m", "spark.a": "b=c"},
        ui_port=18080,
    )
    assert forms.attach_request(attach_form(password="pw-1", type="spark")).vm.engine == (
        SparkEngine()
    )
    plain = forms.attach_request(attach_form(password="pw-1", partition="debug"))
    assert plain.vm.engine is None


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"type": "spark", "conf": "spark.executor.memory"}, "spark: --conf takes KEY=VALUE"),
        ({"type": "spark", "conf": "executor.memory=4g"}, "are named spark.SOMETHING"),
        ({"type": "spark", "ui_port": 70000}, "--ui-port 70000 is not a port"),
        ({"type": "spark", "master": "http://x"}, "use spark://HOST:PORT, yarn, or local"),
        ({"type": "spark", "submit": "spark-submit; rm"}, "--submit 'spark-submit; rm'"),
        ({"type": "slurm", "partition": "a b"}, "slurm: --partition 'a b' is not a Slurm name"),
    ],
)
def test_engine_settings_the_engine_would_not_take_are_refused_as_the_cli_refuses_them(
    fields: dict[str, object], refusal: str
) -> None:
    with pytest.raises(forms.FormError, match=re.escape(refusal)) as caught:
        forms.attach_request(attach_form(password="pw-1", **fields))
    assert "pw-1" not in str(caught.value)


def test_an_engine_attached_machine_s_row_says_its_engine() -> None:
    login = m.SshLogin(username="me", auth="key")
    vms = [
        m.VmRecord(
            name=name,
            vm=m.VmConfig(address="10.0.0.5", ssh=login, engine=engine),
            created_at=0.0,
        )
        for name, engine in [
            ("hpc", SlurmEngine(partition="debug", qos="high")),
            ("hpc-default", SlurmEngine()),
            ("sparky", SparkEngine(master="spark://127.0.0.1:7077", conf={"spark.a": "b"})),
            ("box", None),
        ]
    ]
    rows = {r.name: r for r in snapshot([], [], vms, at=1.0).targets}
    assert rows["hpc"].engine == "slurm · partition debug · qos high"
    assert rows["hpc-default"].engine == "slurm · default partition"
    assert rows["sparky"].engine == "spark · spark://127.0.0.1:7077"
    assert rows["box"].engine is None
