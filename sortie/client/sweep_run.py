"""``SweepRun``: a submitted sweep, seen from outside it (what ``Experiment.submit`` returns
for a ``HyperDriveConfig``), with the methods of v1's ``HyperDriveRun``. Its trials are
child runs, ordinary runs of the experiment."""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING, Any

from sortie.client import sdk
from sortie.client.sweep_views import (
    TrialView,
    get_sweep,
    ranked,
    sweep_of,
    sweep_view,
    trials_of,
)
from sortie.client.views import as_dict
from sortie.proto import messages as m
from sortie.proto.states import TERMINAL, RunState

if TYPE_CHECKING:
    from sortie.client.sweeps import HyperDriveConfig

__all__ = ["SweepRun"]


class SweepRun(sdk.SubmittedRun):
    """A sweep run: ``get_children()`` are its trials (oldest first)."""

    def __init__(
        self, experiment: sdk.Experiment, run_id: str, hyperdrive_config: Any = None
    ) -> None:
        # not super(): in the v1 layer the next class is its Run, whose constructor differs
        sdk.SubmittedRun.__init__(self, experiment.workspace, run_id)
        self.experiment = experiment
        self._hyperdrive_config = hyperdrive_config

    def __repr__(self) -> str:
        return f"{type(self).__name__}(experiment={self.experiment.name!r}, id={self.id!r})"

    @property
    def hyperdrive_config(self) -> HyperDriveConfig | None:
        """The configuration this object submitted (None for a sweep looked up by id)."""
        return self._hyperdrive_config  # type: ignore[no-any-return]  # set by submit

    def _spec(self) -> m.SweepSpec:
        return sweep_of(self._record()).spec

    def _trials(self) -> list[TrialView]:
        ws = self.workspace
        rec = ws._run(get_sweep(ws._client, self.id))
        return ws._run(trials_of(ws._client, rec))

    def _trial_run(self, run_id: str) -> sdk.SubmittedRun:
        """A trial's run object (the v1 layer's is its ``Run``)."""
        return self.experiment._run_of(run_id)

    def get_children(  # v1's HyperDriveRun: the trials
        self, *args: Any, **kwargs: Any
    ) -> builtins.list[sdk.SubmittedRun]:
        """The sweep's trials, by index (filters as ``SubmittedRun.get_children``)."""
        wanted = {r.id for r in super().get_children(*args, **kwargs)}
        return [self._trial_run(t.run_id) for t in self._trials() if t.run_id in wanted]

    def get_hyperparameters(self) -> dict[str, str]:
        """run id -> the trial's parameters as a JSON string (as v1 returns them)."""
        return {t.run_id: json.dumps(t.params) for t in self._trials()}

    def get_children_sorted_by_primary_metric(
        self, top: int = 0, reverse: bool = False, discard_no_metric: bool = False
    ) -> builtins.list[dict[str, Any]]:
        """The trials best first by the primary metric's goal (``reverse``: worst first), each
        ``{"run_id", "hyperparameters" (JSON), "best_primary_metric", "status"}``; trials
        without the metric come after (or not at all, with ``discard_no_metric``). ``top``:
        that many (0: all)."""
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise ValueError(f"top must be 0 (all) or a positive integer, got {top!r}")
        rows = [
            {
                "run_id": t.run_id,
                "hyperparameters": json.dumps(t.params),
                "best_primary_metric": t.objective,
                "status": str(t.state),
            }
            for t in ranked(self._trials(), self._spec().goal, reverse=reverse)
            if t.objective is not None or not discard_no_metric
        ]
        return rows[:top] if top else rows

    def get_best_run_by_primary_metric(
        self,
        include_failed: bool = True,
        include_canceled: bool = True,
        include_resume_from_runs: bool = True,
    ) -> sdk.SubmittedRun | None:
        """The trial with the best value of the primary metric (ties: the earlier trial), or
        None when no trial reported it."""
        skipped = set()
        if not include_failed:
            skipped.add(RunState.FAILED)
        if not include_canceled:
            skipped.add(RunState.CANCELED)
        for t in ranked(self._trials(), self._spec().goal):
            if t.objective is not None and t.state not in skipped:
                return self._trial_run(t.run_id)
        return None

    def get_metrics(  # v1's HyperDriveRun: every trial's metrics
        self, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """run id -> that trial's metrics (as ``SubmittedRun.get_metrics`` gives them)."""
        return {
            t.run_id: self._trial_run(t.run_id).get_metrics(*args, **kwargs) for t in self._trials()
        }

    def get_details(self) -> dict[str, Any]:
        """The sweep as `sortie sweep show --output json` prints it."""
        ws = self.workspace
        rec = ws._run(get_sweep(ws._client, self.id))
        return as_dict(sweep_view(rec, ws._run(trials_of(ws._client, rec))))

    def wait_for_completion(  # no logs of its own
        self, show_output: bool = False, raise_on_error: bool = True
    ) -> dict[str, Any]:
        """Block until the sweep ends (with ``show_output``: a line as trials are issued and
        the best changes); raises ``RunFailed`` if it did not complete."""
        ws = self.workspace
        rec = ws._run(ws._client.wait(self.id, _progress_printer() if show_output else None))
        assert rec.state in TERMINAL
        if raise_on_error and rec.state != RunState.COMPLETED:
            why = f": {rec.error.kind}: {rec.error.message}" if rec.error else ""
            raise sdk.RunFailed(f"sweep {self.id} ended {rec.state}{why}")
        return self.get_details()


def _progress_printer() -> Any:
    shown: list[tuple[object, ...]] = []

    def seen(rec: m.RunRecord) -> None:
        sweep = rec.sweep
        if sweep is None:
            return
        now = (rec.state, sweep.issued, sweep.best_run_id, sweep.best_objective)
        if shown and shown[-1] == now:
            return
        shown.append(now)
        best = (
            f", best {sweep.best_run_id} ({sweep.best_objective:.6g})"
            if sweep.best_run_id is not None and sweep.best_objective is not None
            else ""
        )
        print(f"sweep {rec.run_id}: {rec.state}, {sweep.issued} trials issued{best}", flush=True)

    return seen
