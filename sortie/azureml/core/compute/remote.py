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
    def attach_configuration(  # noqa: PLR0917  # the hosted SDK v1's signature, kept for its users' scripts
        username: str,
        address: str | None = None,
        ssh_port: int = 22,
        password: str | None = "",
        private_key_file: str | None = "",
        private_key_passphrase: str | None = "",
        resource_id: str | None = None,
        **sortie_options: Any,
    ) -> RemoteAttachConfiguration:
        """How to reach the machine: by password or by private key. Sortie's own options
        (``known_hosts``, ``trust_new_host_key``, ...) follow v1's as keywords."""
        if not address:
            where = f" (resource_id {resource_id!r} names an Azure VM)" if resource_id else ""
            raise ComputeTargetException(
                f"give address= (the machine's host name or IP address){where}"
            )
        try:
            return sdk.RemoteCompute.attach_configuration(
                address=address,
                username=username,
                ssh_port=ssh_port,
                password=password or None,
                private_key_file=private_key_file or None,
                private_key_passphrase=private_key_passphrase or None,
                **sortie_options,
            )
        except TypeError as exc:
            raise ComputeTargetException(f"attach_configuration: {exc}") from None

    def delete(self, force: bool = False) -> None:
        raise ComputeTargetException(
            f"delete is not supported for RemoteCompute {self.name!r}: use detach() instead"
        )
