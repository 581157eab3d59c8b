"""``azureml.core.model``: ``Model``, a registered model (the native SDK's class, already in
v1's shape)."""

from sortie.client.models import Model

__all__ = ["Model"]
