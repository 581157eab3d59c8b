"""``azureml.core.compute``: compute targets (clusters and attached machines)."""

from sortie.azureml.core.compute.amlcompute import AmlCompute, AmlComputeProvisioningConfiguration
from sortie.azureml.core.compute.compute import ComputeTarget
from sortie.azureml.core.compute.hdinsight import HDInsightCompute
from sortie.azureml.core.compute.remote import RemoteCompute

__all__ = [
    "AmlCompute",
    "AmlComputeProvisioningConfiguration",
    "ComputeTarget",
    "HDInsightCompute",
    "RemoteCompute",
]
