"""``azureml.core.compute.hdinsight``: ``HDInsightCompute``, a Spark cluster attached through
its head node (runs go to spark-submit there)."""

from __future__ import annotations

from typing import Any, ClassVar

from sortie.azureml.core.compute.remote import RemoteCompute
from sortie.azureml.exceptions import ComputeTargetException
from sortie.client import sdk
from sortie.client.sdk import RemoteAttachConfiguration

__all__ = ["HDInsightCompute"]


class HDInsightCompute(RemoteCompute):
    """A Spark cluster's head node, attached over SSH (v1's ``HDInsightCompute``)."""

    _kind: ClassVar[str] = "spark"
    type: ClassVar[str] = "HDInsight"

    @staticmethod
    def attach_configuration(  # type: ignore[override]  # noqa: PLR0917  # v1's signature, kept for its users' scripts
        address: str | None = None,
        ssh_port: int = 22,
        username: str | None = None,
        password: str | None = None,
        private_key_file: str | None = None,
        private_key_passphrase: str | None = None,
        resource_id: str | None = None,
        **sortie_options: Any,
    ) -> RemoteAttachConfiguration:
        """How to reach the head node: its ``address``, a user and a password or a private
        key. Sortie's options follow as keywords: ``master`` (default yarn, as on HDInsight;
        or spark://HOST:PORT), ``conf`` (settings for every run), ``submit`` and ``ui_port``
        (spark-submit's path and a standalone master's UI port), and RemoteCompute's
        (``known_hosts``, ``trust_new_host_key``, ...). An Azure resource id cannot be reached
        from here: give the head node's address."""
        if not username:
            raise ComputeTargetException("username is not provided.")
        if not address:
            where = f" ({resource_id!r} names an Azure cluster)" if resource_id else ""
            raise ComputeTargetException(
                f"give address= (the Spark head node's host name or IP address){where}"
            )
        if bool(password) == bool(private_key_file):
            raise ComputeTargetException(
                "give either password= or private_key_file= (one of them, not both)"
            )
        try:
            return sdk.SparkCompute.attach_configuration(
                address=address,
                ssh_port=int(ssh_port),
                username=username,
                password=password or None,
                private_key_file=private_key_file or None,
                private_key_passphrase=private_key_passphrase or None,
                **sortie_options,
            )
        except (TypeError, ValueError) as exc:
            raise ComputeTargetException(str(exc)) from None
