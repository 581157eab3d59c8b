"""The Azure ML SDK v1 namespace over Sortie's own SDK.

v1 code runs after ``azureml.`` -> ``sortie.azureml.`` in its imports: the module paths
(``sortie.azureml.core``, ``.core.compute``, ``.core.runconfig``, ...), names, signatures,
defaults and exceptions follow the hosted platform's v1 reference. It is a thin layer:
everything goes through ``sortie.client.sdk`` and the one conversion to the wire
(``sortie.client.runconfig.run_spec``); no second client. What has no meaning here
(subscription ids, resource groups, vnet names, admin users) is accepted and kept on the
object, never fatal.
"""
