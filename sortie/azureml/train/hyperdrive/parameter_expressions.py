"""``azureml.train.hyperdrive.parameter_expressions``: how each parameter's values are drawn
(the native functions of ``sortie.client.sweep_space``, raising v1's
``HyperDriveConfigException`` for bad arguments)."""

from __future__ import annotations

from sortie.azureml.train.hyperdrive.exceptions import raising_v1
from sortie.client import sweep_space as native

__all__ = [
    "choice",
    "lognormal",
    "loguniform",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
]

choice = raising_v1(native.choice)
randint = raising_v1(native.randint)
uniform = raising_v1(native.uniform)
quniform = raising_v1(native.quniform)
loguniform = raising_v1(native.loguniform)
qloguniform = raising_v1(native.qloguniform)
normal = raising_v1(native.normal)
qnormal = raising_v1(native.qnormal)
lognormal = raising_v1(native.lognormal)
qlognormal = raising_v1(native.qlognormal)
