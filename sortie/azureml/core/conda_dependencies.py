"""``azureml.core.conda_dependencies``."""

from sortie.client.conda import CondaDependencies

__all__ = ["CondaDependencies"]
