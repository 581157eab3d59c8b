"""``azureml.core.compute_target``: where v1 code imports ``ComputeTargetException``."""

from sortie.azureml.exceptions import ComputeTargetException

__all__ = ["ComputeTargetException"]
