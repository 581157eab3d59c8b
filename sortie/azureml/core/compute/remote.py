"""``azureml.core.compute.remote``: ``RemoteCompute``, a machine attached over SSH."""

from __future__ import annotations

from typing import Any, ClassVar

from sortie.azureml.core.compute.compute import ComputeTarget
from sortie.azureml.exceptions import ComputeTargetException
from sortie.client import sdk
from sortie.client.sdk import RemoteAttachConfiguration

__all__ = ["RemoteAttachConfiguration", "RemoteCompute"]


class RemoteCompute(ComputeTarget):
    """An existing machine that Sortie installs an agent on (v1's ``RemoteCompute``)."""

    _kind: ClassVar[str] = "vm"
    type: ClassVar[str] = "VirtualMachine"

    @staticmethod
    def attach_configuration(  # noqa: PLR0913, PLR0917  # the hosted SDK v1's signature, kept for its users' scripts
        username: str,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        vm_name: str | None = None,
        resource_id: str | None = None,
        address: str | None = None,
        ssh_port: int = 22,
        password: str | None = "",
        private_key_file: str | None = "",
        private_key_passphrase: str | None = "",
        **sortie_options: Any,
    ) -> RemoteAttachConfiguration:
        """How to reach the machine: its ``address``, and a password or a private key.
        Sortie's own options (``known_hosts``, ``trust_new_host_key``, ...) follow v1's as
        keywords. An Azure VM's resource id (or subscription, group and VM name) cannot be
        reached from here: give its address."""
        if not username:
            raise ComputeTargetException("username is not provided.")
        if not address:
            named = resource_id or vm_name
            where = f" ({named!r} names an Azure VM, which Sortie cannot reach)" if named else ""
            raise ComputeTargetException(
                f"give address= (the machine's host name or IP address){where}"
            )
        if bool(password) == bool(private_key_file):
            raise ComputeTargetException(
                "give either password= or private_key_file= (one of them, not both)"
            )
        return sdk.RemoteCompute.attach_configuration(
            address=address,
            username=username,
            ssh_port=ssh_port,
            password=password or None,
            private_key_file=private_key_file or None,
            private_key_passphrase=private_key_passphrase or None,
            **sortie_options,
        )

    def delete(self, force: bool = False) -> None:
        raise ComputeTargetException(
            f"delete is not supported for RemoteCompute {self.name!r}: use detach() instead"
        )
