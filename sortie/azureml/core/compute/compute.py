"""``azureml.core.compute.ComputeTarget``: look a target up by name, create, attach, list.

``ComputeTarget(workspace, name)`` asks the scheduler and returns an ``AmlCompute`` (a
cluster) or a ``RemoteCompute`` (an attached machine); a name it does not know raises
``ComputeTargetException``, so v1's get-or-create works::

    try:
        cluster = ComputeTarget(workspace=ws, name="cpu-cluster")
    except ComputeTargetException:
        cluster = ComputeTarget.create(ws, "cpu-cluster", config)
"""

from __future__ import annotations

import builtins
import time
from typing import Any, ClassVar, Self

from sortie.azureml.exceptions import ComputeTargetException
from sortie.client import sdk
from sortie.client.client import RequestRefused
from sortie.proto import messages as m
from sortie.proto.engines import kind_of

POLL_S = 0.5


def _machine() -> type[ComputeTarget]:
    return ComputeTarget._kinds["vm"]


def _kind_of(vm: m.VmRecord) -> type[ComputeTarget]:
    """The class of an attached machine: RemoteCompute, or its engine's (HDInsightCompute for
    Spark; a Slurm login node, which v1 has no class for, is a RemoteCompute)."""
    engine = vm.vm.engine
    return ComputeTarget._kinds.get(kind_of(engine) if engine else "vm", _machine())


class ComputeTarget(sdk.ComputeTarget):
    """A named compute target of a workspace (the v1 base class)."""

    _kinds: ClassVar[dict[str, type[ComputeTarget]]] = {}  # "cluster" | "vm" | "spark" -> class
    _kind: ClassVar[str] = ""
    type: ClassVar[str] = ""  # v1's compute type name
    _found: m.ComputeReply | m.VmReply | None = None  # what the constructor's lookup found

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls._kind:
            ComputeTarget._kinds[cls._kind] = cls

    def __new__(cls, workspace: sdk.Workspace | None = None, name: str | None = None) -> Self:
        if workspace is None or name is None:  # _blank(): filled in by the caller
            return super().__new__(cls)
        reply = _show(workspace, name)
        kind = _kind_of(reply.vm) if isinstance(reply, m.VmReply) else cls._kinds["cluster"]
        if not issubclass(kind, cls):
            raise ComputeTargetException(
                f"{name!r} is a {kind.type}, not a {cls.type or cls.__name__}"
            )
        target = super().__new__(kind)
        sdk.ComputeTarget.__init__(target, workspace, name)
        target._found = reply
        return target

    def __init__(self, workspace: sdk.Workspace | None = None, name: str | None = None) -> None:
        reply = self._found
        if reply is None:
            return  # made by _blank(), which set it up
        if isinstance(reply, m.VmReply):
            self._vm = reply.vm
        else:
            self._info = reply.info

    @staticmethod
    def create(  # v1 dispatches on the configuration's class
        workspace: sdk.Workspace, name: str, provisioning_configuration: sdk.ClusterConfiguration
    ) -> ComputeTarget:
        """Start creating a cluster; ``wait_for_completion`` follows it."""
        kind = ComputeTarget._kinds["cluster"]
        try:
            made = super(ComputeTarget, kind).create(workspace, name, provisioning_configuration)
        except RequestRefused as exc:
            raise ComputeTargetException(f"cannot create {name!r}: {exc}") from None
        assert isinstance(made, ComputeTarget)
        return made

    @staticmethod
    def attach(  # v1 dispatches on the configuration's class
        workspace: sdk.Workspace, name: str, attach_configuration: sdk.RemoteAttachConfiguration
    ) -> ComputeTarget:
        """Start attaching a machine; ``wait_for_completion`` follows it."""
        engine = attach_configuration.engine
        kind = ComputeTarget._kinds.get(kind_of(engine) if engine else "vm", _machine())
        try:
            made = super(ComputeTarget, kind).attach(workspace, name, attach_configuration)
        except RequestRefused as exc:
            raise ComputeTargetException(f"cannot attach {name!r}: {exc}") from None
        assert isinstance(made, ComputeTarget)
        return made

    @staticmethod
    def list(workspace: sdk.Workspace) -> builtins.list[ComputeTarget]:  # type: ignore[override]  # v1 lists clusters and machines
        reply = workspace._run(workspace._client.compute(m.ComputeList()))
        out: builtins.list[ComputeTarget] = []
        for info in reply.computes:
            cluster = ComputeTarget._kinds["cluster"]._blank(workspace, info.compute.name)
            cluster._info = info
            out.append(cluster)
        for vm in reply.vms:
            machine = _kind_of(vm)._blank(workspace, vm.name)
            machine._vm = vm
            out.append(machine)
        return out

    @property
    def provisioning_errors(self) -> builtins.list[dict[str, Any]]:
        if self._vm is not None:
            errors = self._vm.provisioning_errors
        else:
            errors = self._info.compute.provisioning_errors if self._info is not None else []
        return [{"code": e.code, "message": e.message} for e in errors]

    def wait_for_completion(  # type: ignore[override]  # v1's signature
        self,
        show_output: bool = False,
        min_node_count: int | None = None,
        timeout_in_minutes: float = 25,
        is_delete_operation: bool = False,
    ) -> None:
        """Wait until creating (or attaching) has ended, then, for a cluster, until
        ``min_node_count`` nodes (default: its ``min_nodes``) run; with
        ``is_delete_operation`` until the target is gone. Raises ``ComputeTargetException``
        when provisioning failed; a timeout returns (saying so with ``show_output``), as in v1."""
        deadline = time.monotonic() + timeout_in_minutes * 60
        if is_delete_operation:
            self._wait_gone(deadline, show_output)
            return
        state = sdk.ComputeTarget.wait_for_completion(
            self, show_output=show_output, timeout_s=timeout_in_minutes * 60
        )
        if state == "Failed":
            why = "; ".join(f"{e['code']}: {e['message']}" for e in self.provisioning_errors)
            raise ComputeTargetException(
                f"{self.name}: provisioning ended Failed: {why or 'no error was recorded'}"
            )
        if state in ("Deleted", "Detached"):  # after delete() / detach(): it is gone
            return
        if state == "Creating":
            if show_output:
                print(f"Wait timeout has been reached: {self.name} is still Creating", flush=True)
            return
        self._wait_nodes(min_node_count, deadline, show_output)

    def _wait_nodes(self, count: int | None, deadline: float, show_output: bool) -> None:
        """Subclasses with nodes wait for ``count`` of them; others have nothing to wait."""

    def _wait_gone(self, deadline: float, show_output: bool) -> None:
        while True:
            try:
                _show(self.workspace, self.name)
            except ComputeTargetException:
                if show_output:
                    print(f"{self.name}: deleted", flush=True)
                return
            if time.monotonic() > deadline:
                raise ComputeTargetException(f"{self.name}: not gone in time")
            time.sleep(POLL_S)


def _show(workspace: sdk.Workspace, name: str) -> m.ComputeReply | m.VmReply:
    """The scheduler's record of target ``name``, or ``ComputeTargetException``."""
    try:
        reply: m.ComputeReply | m.VmReply = workspace._run(
            workspace._client.compute(m.ComputeShow(name=name))
        )
    except RequestRefused as exc:
        if exc.code != "not_found":
            raise ComputeTargetException(f"{name!r}: {exc}") from None
        raise ComputeTargetException(
            f"ComputeTargetNotFound: Compute Target with name {name} not found in provided "
            "workspace (`sortie compute list` shows the targets)"
        ) from None
    return reply
