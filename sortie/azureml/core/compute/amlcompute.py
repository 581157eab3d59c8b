"""``azureml.core.compute.amlcompute``: ``AmlCompute``, an autoscaling cluster.

``get_status()`` returns an ``AmlComputeStatus`` with v1's attributes, and ``serialize()``
gives v1's dictionary (``currentNodeCount``, ``nodeStateCounts``, ``scaleSettings``, ...).
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from sortie.azureml.core.compute.compute import POLL_S, ComputeTarget
from sortie.azureml.exceptions import ComputeTargetException
from sortie.client import sdk
from sortie.proto import messages as m

__all__ = [
    "AmlCompute",
    "AmlComputeNodeStateCounts",
    "AmlComputeProvisioningConfiguration",
    "AmlComputeStatus",
    "ScaleSettings",
]

DEFAULT_VM_SIZE = "STANDARD_NC6"  # v1's default size
DEFAULT_MAX_NODES = 4  # v1's default


@dataclass
class AmlComputeProvisioningConfiguration(sdk.ClusterConfiguration):
    """What ``AmlCompute.provisioning_configuration`` returns. The Azure-only settings are
    kept here as given; they change nothing in Sortie and are never sent."""

    admin_username: str | None = None
    admin_user_password: str | None = field(default=None, repr=False)
    admin_user_ssh_key: str | None = field(default=None, repr=False)
    vnet_resourcegroup_name: str | None = None
    vnet_name: str | None = None
    subnet_name: str | None = None
    tags: dict[str, str] | None = None
    description: str | None = None
    remote_login_port_public_access: str = "NotSpecified"
    identity_type: str | None = None
    identity_id: builtins.list[str] | None = None
    location: str | None = None
    enable_node_public_ip: bool = True


@dataclass(frozen=True, kw_only=True)
class ScaleSettings:
    minimum_node_count: int
    maximum_node_count: int
    node_idle_time_before_scale_down: float


@dataclass(frozen=True, kw_only=True)
class AmlComputeNodeStateCounts:
    idle_node_count: int = 0
    leaving_node_count: int = 0
    preempted_node_count: int = 0
    preparing_node_count: int = 0
    running_node_count: int = 0
    unusable_node_count: int = 0


@dataclass(frozen=True, kw_only=True)
class AmlComputeStatus:
    """A cluster's state as v1 reports it."""

    allocation_state: str
    allocation_state_transition_time: str | None
    creation_time: str | None
    current_node_count: int
    errors: builtins.list[dict[str, Any]] | None
    modified_time: str | None
    node_state_counts: AmlComputeNodeStateCounts
    provisioning_state: str
    provisioning_state_transition_time: str | None
    scale_settings: ScaleSettings
    target_node_count: int
    vm_priority: str
    vm_size: str

    def serialize(self) -> dict[str, Any]:
        counts = self.node_state_counts
        scale = self.scale_settings
        return {
            "currentNodeCount": self.current_node_count,
            "targetNodeCount": self.target_node_count,
            "nodeStateCounts": {
                "preparingNodeCount": counts.preparing_node_count,
                "runningNodeCount": counts.running_node_count,
                "idleNodeCount": counts.idle_node_count,
                "unusableNodeCount": counts.unusable_node_count,
                "leavingNodeCount": counts.leaving_node_count,
                "preemptedNodeCount": counts.preempted_node_count,
            },
            "allocationState": self.allocation_state,
            "allocationStateTransitionTime": self.allocation_state_transition_time,
            "errors": self.errors,
            "creationTime": self.creation_time,
            "modifiedTime": self.modified_time,
            "provisioningState": self.provisioning_state,
            "provisioningStateTransitionTime": self.provisioning_state_transition_time,
            "scaleSettings": {
                "minNodeCount": scale.minimum_node_count,
                "maxNodeCount": scale.maximum_node_count,
                "nodeIdleTimeBeforeScaleDown": f"PT{scale.node_idle_time_before_scale_down:g}S",
            },
            "vmPriority": "LowPriority" if self.vm_priority == "lowpriority" else "Dedicated",
            "vmSize": self.vm_size,
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def status_of(info: m.ComputeInfo) -> AmlComputeStatus:
    """v1's status of a cluster, from the scheduler's view of it."""
    rec, counts = info.compute, info.counts
    states = [n.state for n in info.nodes]
    errors = [{"code": e.code, "message": e.message} for e in rec.provisioning_errors]
    return AmlComputeStatus(
        allocation_state="Steady" if counts.current == counts.target else "Resizing",
        allocation_state_transition_time=None,
        creation_time=_iso(rec.created_at),
        current_node_count=counts.current,
        errors=errors or None,
        modified_time=None,
        node_state_counts=AmlComputeNodeStateCounts(
            idle_node_count=counts.idle,
            leaving_node_count=states.count("stopping"),
            preempted_node_count=counts.preempted,
            preparing_node_count=states.count("creating"),
            running_node_count=counts.busy,
            unusable_node_count=states.count("failed"),
        ),
        provisioning_state=rec.provisioning_state,
        provisioning_state_transition_time=None,
        scale_settings=ScaleSettings(
            minimum_node_count=rec.cluster.min_nodes,
            maximum_node_count=rec.cluster.max_nodes,
            node_idle_time_before_scale_down=rec.cluster.idle_seconds_before_scaledown,
        ),
        target_node_count=counts.target,
        vm_priority=rec.cluster.vm_priority,
        vm_size=rec.cluster.vm_size,
    )


class AmlCompute(ComputeTarget):
    """An autoscaling cluster (v1's ``AmlCompute``)."""

    _kind: ClassVar[str] = "cluster"
    type: ClassVar[str] = "AmlCompute"

    @staticmethod
    def provisioning_configuration(  # noqa: PLR0913, PLR0917  # the hosted SDK v1's signature, kept for its users' scripts
        vm_size: str = "",
        vm_priority: str = "dedicated",
        min_nodes: int = 0,
        max_nodes: int | None = None,
        idle_seconds_before_scaledown: float | None = 1800,
        admin_username: str | None = None,
        admin_user_password: str | None = None,
        admin_user_ssh_key: str | None = None,
        vnet_resourcegroup_name: str | None = None,
        vnet_name: str | None = None,
        subnet_name: str | None = None,
        tags: dict[str, str] | None = None,
        description: str | None = None,
        remote_login_port_public_access: str = "NotSpecified",
        identity_type: str | None = None,
        identity_id: builtins.list[str] | None = None,
        location: str | None = None,
        enable_node_public_ip: bool = True,
    ) -> AmlComputeProvisioningConfiguration:
        """A cluster of ``vm_size`` nodes (default STANDARD_NC6) between ``min_nodes`` and
        ``max_nodes`` (default 4); idle nodes stop after ``idle_seconds_before_scaledown``
        (default 1800, as in the last v1)."""
        idle = 1800.0 if idle_seconds_before_scaledown is None else idle_seconds_before_scaledown
        return AmlComputeProvisioningConfiguration(
            vm_size=vm_size or DEFAULT_VM_SIZE,
            max_nodes=DEFAULT_MAX_NODES if max_nodes is None else max_nodes,
            min_nodes=min_nodes,
            idle_seconds_before_scaledown=idle,
            vm_priority=vm_priority,
            admin_username=admin_username,
            admin_user_password=admin_user_password,
            admin_user_ssh_key=admin_user_ssh_key,
            vnet_resourcegroup_name=vnet_resourcegroup_name,
            vnet_name=vnet_name,
            subnet_name=subnet_name,
            tags=tags,
            description=description,
            remote_login_port_public_access=remote_login_port_public_access,
            identity_type=identity_type,
            identity_id=identity_id,
            location=location,
            enable_node_public_ip=enable_node_public_ip,
        )

    @staticmethod
    def supported_vmsizes(  # v1's signature and shape
        workspace: sdk.Workspace, location: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """The sizes a cluster may use (Azure names among them), as v1 lists them."""
        reply = workspace._run(workspace._client.compute(m.SizesList()))
        return [
            {
                "name": s.name,
                "vCPUs": s.cpus,
                "gpus": s.gpus,
                "memoryGB": round(s.memory_mb / 1024, 2),
                "gpuType": s.gpu_type,
            }
            for s in reply.sizes
        ]

    def get_status(self) -> AmlComputeStatus:  # type: ignore[override]  # v1's status object
        self.refresh_state()
        if self._info is None:
            raise ComputeTargetException(f"{self.name} is not a cluster")
        return status_of(self._info)

    @property
    def status(self) -> AmlComputeStatus:
        return self.get_status()

    @property
    def vm_size(self) -> str:
        return self.get_status().vm_size

    @property
    def vm_priority(self) -> str:
        return self.get_status().vm_priority

    @property
    def scale_settings(self) -> ScaleSettings:
        return self.get_status().scale_settings

    def detach(self, keep_files: bool = False, force: bool = False) -> None:
        raise ComputeTargetException(
            f"detach is not supported for AmlCompute {self.name!r}: use delete() instead"
        )

    def _wait_nodes(self, count: int | None, deadline: float, show_output: bool) -> None:
        """Until ``count`` nodes (default: ``min_nodes``) run, or the deadline (v1 returns
        then too, saying so)."""
        shown = -1
        while True:
            status = self.get_status()
            want = status.scale_settings.minimum_node_count if count is None else count
            counts = status.node_state_counts
            running = counts.idle_node_count + counts.running_node_count
            if show_output and running != shown:
                print(f"{self.name}: {running} of {want} nodes ready", flush=True)
                shown = running
            if running >= want or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        if show_output:
            print("AmlCompute wait for completion finished", flush=True)
            if running >= want:
                print("Minimum number of nodes requested have been provisioned", flush=True)
            else:
                print(
                    f"Wait timeout has been reached: {running} of {want} nodes are ready "
                    f"(`sortie compute show {self.name}` says why)",
                    flush=True,
                )
