"""The compute page's forms and the requests they become. Pure: a form in, a request or the
refusal a person reads next to the form out.

Each form is the JSON body the page's script posts (``static/views/compute.js``); the requests
are the ones `sortie compute create|update|delete|attach|detach` send, so the scheduler checks
them as it checks the CLI's (names, sizes, node counts, credentials).

**Invariant:** an ``AttachForm``'s password, private key and passphrase go into the attach
request's ``SshSecret`` and nowhere else: no refusal quotes them (msgspec's decode errors name
the field, never its value) and nothing here logs.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

from sortie.proto import messages as m
from sortie.proto.engines import Engine, engine_of


class FormError(ValueError):
    """A form that cannot be sent: the message says what to change."""


class _Form(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


F = TypeVar("F", bound=_Form)


class CreateForm(_Form, frozen=True, kw_only=True):
    name: str
    vm_size: str
    max_nodes: int
    min_nodes: int = 0
    idle_seconds_before_scaledown: float = 120.0
    vm_priority: Literal["dedicated", "lowpriority"] = "dedicated"


class UpdateForm(_Form, frozen=True, kw_only=True):
    min_nodes: int | None = None
    max_nodes: int | None = None
    idle_seconds_before_scaledown: float | None = None


class DeleteForm(_Form, frozen=True, kw_only=True):
    force: bool = False


class DetachForm(_Form, frozen=True, kw_only=True):
    force: bool = False
    keep_files: bool = False


class HostKeyForm(_Form, frozen=True, kw_only=True):
    address: str
    ssh_port: int = 22


class AttachForm(_Form, frozen=True, kw_only=True):
    name: str
    address: str
    ssh_port: int = 22
    username: str
    private_key: str | None = None  # the key file's text, read by the page from the upload
    passphrase: str | None = None
    password: str | None = None
    host_key_fingerprint: str | None = None  # the "SHA256:..." the person confirmed
    check_only: bool = False  # check the form, send nothing (the page does, before the scan)
    # what the machine is: one that runs its runs itself (vm), or the login node of a Slurm
    # cluster / the head node of a Spark cluster it hands them to; that type's settings
    # follow, each None or empty for the engine's default
    type: Literal["vm", "slurm", "spark"] = "vm"
    partition: str | None = None  # slurm
    account: str | None = None
    qos: str | None = None
    master: str | None = None  # spark
    conf: str | None = None  # spark: KEY=VALUE lines
    submit: str | None = None
    ui_port: int | None = None

    def __repr__(self) -> str:
        return f"AttachForm(name={self.name!r}, address={self.address!r}, <credentials>)"


def decode(body: bytes, form: type[F]) -> F:
    try:
        return msgspec.json.decode(body, type=form)
    except msgspec.DecodeError as exc:  # names the field, never the value sent
        raise FormError(f"the form was not understood: {exc}") from None


def create_request(form: CreateForm) -> m.ComputeCreate:
    return m.ComputeCreate(
        name=form.name.strip(),
        cluster=m.ProcessCluster(
            vm_size=form.vm_size,
            max_nodes=form.max_nodes,
            min_nodes=form.min_nodes,
            idle_seconds_before_scaledown=form.idle_seconds_before_scaledown,
            vm_priority=form.vm_priority,
        ),
    )


def update_request(name: str, form: UpdateForm) -> m.ComputeUpdate:
    if form == UpdateForm():
        raise FormError("nothing to change: give min nodes, max nodes or idle seconds")
    return m.ComputeUpdate(
        name=name,
        min_nodes=form.min_nodes,
        max_nodes=form.max_nodes,
        idle_seconds_before_scaledown=form.idle_seconds_before_scaledown,
    )


def host_key_request(form: HostKeyForm) -> m.HostKeyScan:
    address = form.address.strip()
    if not address:
        raise FormError("give the machine's address (a host name or an IP address)")
    _check_port(form.ssh_port)
    return m.HostKeyScan(address=address, ssh_port=form.ssh_port)


def attach_request(form: AttachForm) -> m.ComputeAttach:
    """The attach request, or ``FormError`` saying what is missing (nothing is sent then)."""
    if not form.name.strip():
        raise FormError("give the machine a name: the compute target runs will name")
    if not form.address.strip():
        raise FormError("give the machine's address (a host name or an IP address)")
    _check_port(form.ssh_port)
    if not form.username.strip():
        raise FormError("give the user to log in as (no root needed)")
    engine = _engine(form)
    secret, auth = _secret(form)
    login = m.SshLogin(
        username=form.username.strip(),
        ssh_port=form.ssh_port,
        auth=auth,
        host_key_fingerprint=form.host_key_fingerprint or None,
    )
    return m.ComputeAttach(
        name=form.name.strip(),
        vm=m.VmConfig(address=form.address.strip(), ssh=login, engine=engine),
        secret=secret,
    )


def _engine(form: AttachForm) -> Engine | None:
    """The engine the form's type names, from that type's fields (the other type's are not
    read); checked as the CLI's `--type slurm|spark` flags are (``proto.engines``)."""
    if form.type == "vm":
        return None
    lines = [line.strip() for line in (form.conf or "").splitlines() if line.strip()]
    try:
        if form.type == "slurm":
            return engine_of(
                "slurm",
                partition=_given(form.partition),
                account=_given(form.account),
                qos=_given(form.qos),
            )
        return engine_of(
            "spark",
            master=_given(form.master),
            conf=lines,
            submit=_given(form.submit),
            ui_port=form.ui_port,
        )
    except ValueError as exc:  # says which setting and what to write instead
        raise FormError(f"{form.type}: {exc}") from None


def _given(value: str | None) -> str | None:
    """A text field as the engine takes it: None (its default) when left empty."""
    return (value or "").strip() or None


def _secret(form: AttachForm) -> tuple[m.SshSecret, Literal["key", "password"]]:
    if form.private_key and form.password:
        raise FormError("give either a private key file or a password, not both")
    if form.private_key:
        return m.SshSecret(private_key=form.private_key, passphrase=form.passphrase or None), "key"
    if form.passphrase:
        raise FormError("a passphrase goes with a private key file: upload the key file too")
    if form.password:
        return m.SshSecret(password=form.password), "password"
    raise FormError(
        "credentials are required: upload the private key file the machine accepts, "
        "or give the user's password"
    )


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise FormError(f"SSH port {port} is not a port: give 1 to 65535 (usually 22)")
