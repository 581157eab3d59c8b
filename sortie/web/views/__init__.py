"""Every view of the dashboard, registered here and only here: the navigation bar lists them
in this order. A new view is one module beside these, one template, and one entry below."""

from __future__ import annotations

from sortie.web.view import View
from sortie.web.views import (
    agents,
    compare,
    compute,
    experiments,
    models,
    pipeline,
    pipelines,
    queue,
    run,
    runs,
    sweep,
    sweeps,
)

VIEWS: tuple[View, ...] = (
    runs.VIEW,
    run.VIEW,
    compare.VIEW,
    experiments.VIEW,
    sweeps.VIEW,  # before sweep: /api/sweeps/events is not a sweep's id
    sweep.VIEW,
    pipelines.VIEW,  # before pipeline: /api/pipelines/events is not a pipeline's id
    pipeline.VIEW,
    models.VIEW,
    compute.VIEW,
    agents.VIEW,
    queue.VIEW,
)
NAV: tuple[View, ...] = tuple(v for v in VIEWS if v.title is not None)
