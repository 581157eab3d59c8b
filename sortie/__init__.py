"""Sortie: run training scripts on your own machines.

``from sortie import Run`` works with the standard library alone (it is what a training
script imports). It and the client SDK names are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sortie.client.run_context import Run

__all__ = [
    "ClusterConfiguration",
    "ComputeTarget",
    "Experiment",
    "RemoteCompute",
    "Run",
    "RunConfiguration",
    "ScriptRunConfig",
    "Workspace",
]

_SDK = {
    "Workspace",
    "Experiment",
    "ScriptRunConfig",
    "RunConfiguration",
    "SubmittedRun",
    "ComputeTarget",
    "ClusterConfiguration",
    "RemoteCompute",
}


def __getattr__(name: str) -> Any:
    if name == "Run":  # loaded on first use too: `sortie run list` needs no run context
        from sortie.client.run_context import Run

        return Run
    if name in _SDK:
        from sortie.client import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'sortie' has no attribute {name!r}")
