"""What a run's reports carry as its latest metrics (``publisher.LatestMetrics``): the last
value of each plain numeric metric of the run itself, for a bounded number of names."""

from __future__ import annotations

from sortie.agents.publisher import LatestMetrics
from sortie.proto import messages as m
from sortie.proto.run_index import LATEST_METRICS


def point(name: str, value: m.MetricValue, **kw: object) -> m.MetricPoint:
    return m.MetricPoint(name=name, value=value, t=0.0, **kw)  # type: ignore[arg-type]  # kw: column, run


def test_the_last_numeric_value_of_each_plain_metric_is_kept() -> None:
    latest = LatestMetrics()
    for p in [
        point("loss", 0.5),
        point("loss", 0.25, step=2),
        point("epoch", 3),
        point("note", "text"),  # not a number
        point("ok", True),  # a bool is not a measure
        point("table", 1.0, column="a"),  # a table's cell
        point("loss", 9.0, run="child_1"),  # a child run's point
    ]:
        latest.add(p)
    assert latest.values == {"loss": 0.25, "epoch": 3.0}


def test_only_the_first_names_are_kept_and_still_updated() -> None:
    latest = LatestMetrics()
    for i in range(LATEST_METRICS + 5):
        latest.add(point(f"m{i}", float(i)))
    latest.add(point("m0", -1.0))
    assert len(latest.values) == LATEST_METRICS
    assert latest.values["m0"] == -1.0 and f"m{LATEST_METRICS}" not in latest.values
