"""Attached machines (compute type "vm"): requests and events. Pure.

Attaching only checks the request and records the machine as Creating; the daemon carries
out ``AttachVm`` (host key, install over SSH, agent start, the link) in the background and
reports back with ``VmProgress`` / ``VmAttached`` / ``VmFailed`` events. The machine's agent
uses the compute's name as its agent id and target.
"""

from __future__ import annotations

import re

import msgspec

from sortie.proto import agent_env, engines
from sortie.proto import messages as m
from sortie.scheduler import clusters, targets
from sortie.scheduler.events import AttachVm, Command, DetachVm, Log, Reply
from sortie.scheduler.model import BUILTIN_TARGETS, SchedulerState

KEEP_PROGRESS = 30
# a key's SHA-256 fingerprint as OpenSSH prints it: unpadded base64 of 32 bytes
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def check_login(login: m.SshLogin, secret: m.SshSecret | None) -> str | None:
    if not login.username.strip():
        return "a username is required (--username)"
    if not 0 < login.ssh_port < 65536:
        return f"ssh port {login.ssh_port} is not a port number (1-65535)"
    if secret is None:
        return "credentials are required: a private key file, or a password"
    if login.auth == "key" and not secret.private_key:
        return "key authentication needs a private key (--private-key-file)"
    if login.auth == "password" and not secret.password:
        return "password authentication needs a password (--password-env or --password-stdin)"
    pinned = login.host_key_fingerprint
    if pinned is not None and not FINGERPRINT.fullmatch(pinned):
        return (
            f"host key fingerprint {pinned!r} is not a SHA-256 fingerprint: give it as "
            "`ssh-keygen -lf` prints it (SHA256: and 43 characters)"
        )
    return None


def _error(reply_to: str, code: m.ErrorCode, message: str) -> list[Command]:
    return [Reply(reply_to, m.ErrorReply(code=code, message=message))]


def attach(state: SchedulerState, req: m.ComputeAttach, reply_to: str, now: float) -> list[Command]:
    """Attach a machine; attaching a name whose attach Failed again retries it in place."""
    if (why := clusters.check_compute_name(req.name)) is not None:
        return _error(reply_to, "bad_request", why)
    failed_before = state.vms.get(req.name)
    taken = req.name in BUILTIN_TARGETS or req.name in state.computes
    if taken or (failed_before is not None and failed_before.provisioning_state != "Failed"):
        return _error(reply_to, "conflict", f"a compute target named {req.name!r} exists")
    if not req.vm.address.strip():
        return _error(reply_to, "bad_request", "an address is required (--address)")
    if (why := check_login(req.vm.ssh, req.secret)) is not None:
        return _error(reply_to, "bad_request", why)
    if (why := agent_env.problem(req.vm.agent_env)) is not None:
        return _error(reply_to, "bad_request", why)
    if req.vm.engine is not None and (why := engines.problem(req.vm.engine)) is not None:
        return _error(reply_to, "bad_request", why)
    # the record keeps the variables as shown (a proxy URL's password is a credential, read by
    # every client that lists computes); the attach itself gets them whole, once
    kept = msgspec.structs.replace(req.vm, agent_env=agent_env.redacted(req.vm.agent_env))
    if failed_before is not None:
        rec = msgspec.structs.replace(
            failed_before,
            vm=kept,
            provisioning_state="Creating",
            link="none",
            remote_port=None,
            progress=[*failed_before.progress, "attaching again"][-KEEP_PROGRESS:],
        )
    else:
        rec = m.VmRecord(name=req.name, vm=kept, created_at=now, progress=["attaching"])
    state.vms.put(req.name, rec)
    state.retired.discard(req.name)
    return [
        AttachVm(name=req.name, vm=req.vm, secret=req.secret),
        Reply(reply_to, m.VmReply(vm=rec)),
        Log("vm attaching", {"compute": req.name, "address": req.vm.address}),
    ]


def detach(state: SchedulerState, req: m.ComputeDetach, reply_to: str, now: float) -> list[Command]:
    rec = state.vms.get(req.name)
    if rec is None:
        known = ", ".join(sorted(state.vms)) or "none"
        return _error(reply_to, "not_found", f"no attached machine {req.name!r}; attached: {known}")
    cmds, refused = targets.release_runs(
        state,
        req.name,
        force=req.force,
        failed=rec.provisioning_state == "Failed",
        action="detach",
        now=now,
    )
    if refused is not None:
        return [Reply(reply_to, refused)]
    _set(state, msgspec.structs.replace(rec, provisioning_state="Deleting"), "detaching")
    # a machine whose attach failed may hold nothing to clean up: it is forgotten either way
    attach_failed = rec.provisioning_state == "Failed" and not (
        rec.provisioning_errors and rec.provisioning_errors[-1].code == targets.DETACH_INCOMPLETE
    )
    force = req.force or attach_failed
    cmds.append(DetachVm(name=req.name, keep_files=req.keep_files, force=force))
    cmds.append(Reply(reply_to, m.VmReply(vm=state.vms[req.name])))
    return cmds


def _set(state: SchedulerState, rec: m.VmRecord, line: str | None = None) -> None:
    if line is not None:
        rec = msgspec.structs.replace(rec, progress=[*rec.progress, line][-KEEP_PROGRESS:])
    state.vms.put(rec.name, rec)


def progress(state: SchedulerState, name: str, line: str) -> list[Command]:
    rec = state.vms.get(name)
    if rec is not None:
        _set(state, rec, line)
    return []


def attached(state: SchedulerState, name: str, remote_port: int | None) -> list[Command]:
    rec = state.vms.get(name)
    if rec is None or rec.provisioning_state == "Deleting":
        return []
    done = msgspec.structs.replace(
        rec, provisioning_state="Succeeded", link="connected", remote_port=remote_port
    )
    _set(state, done, "agent started")
    return [Log("vm attached", {"compute": name})]


def failed(state: SchedulerState, name: str, code: str, message: str, now: float) -> list[Command]:
    rec = state.vms.get(name)
    if rec is None:
        return []
    err = m.ProvisioningError(at=now, code=code, message=message)
    changed = msgspec.structs.replace(
        rec,
        provisioning_errors=[*rec.provisioning_errors, err][-clusters.KEEP_ERRORS :],
        # a failure while Deleting is an attach still finishing (the detach goes on), unless
        # the detach itself could not clean up: then the machine is Failed, to detach again
        provisioning_state="Failed"
        if rec.provisioning_state != "Deleting" or code == targets.DETACH_INCOMPLETE
        else "Deleting",
    )
    _set(state, changed, f"failed: {code}")
    return [Log("vm failed", {"compute": name, "code": code})]


def detached(state: SchedulerState, name: str) -> list[Command]:
    """The machine is detached: it and its agent leave every listing, and that agent's
    heartbeats are ignored from now on (it would otherwise register the name again)."""
    if name not in state.vms:
        return []
    state.vms.delete(name)
    targets.retire_agent(state, name)
    return [Log("vm detached", {"compute": name})]


def link(state: SchedulerState, name: str, link_state: str) -> list[Command]:
    rec = state.vms.get(name)
    if rec is None or rec.link == link_state:
        return []
    new = "connected" if link_state == "connected" else "reconnecting"
    _set(state, msgspec.structs.replace(rec, link=new), f"ssh link {new}")
    return [Log("vm link", {"compute": name, "link": new})]
