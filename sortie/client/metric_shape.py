"""A run's metric points in the shape the hosted platform's ``Run.get_metrics()`` returns."""

from __future__ import annotations

from typing import Any

from sortie.proto import messages as m


def shaped(points: list[m.MetricPoint], name: str | None = None) -> dict[str, Any]:
    """name -> the value (logged once), the list of values (logged more than once, or with
    ``log_list``), or for a table metric (``log_row`` / ``log_table``) column -> values."""
    scalars: dict[str, list[m.MetricValue]] = {}
    tables: dict[str, dict[str, list[m.MetricValue]]] = {}
    order: list[str] = []
    for p in points:
        if name is not None and p.name != name:
            continue
        if p.name not in scalars and p.name not in tables:
            order.append(p.name)
        if p.column is None:
            scalars.setdefault(p.name, []).append(p.value)
        else:
            tables.setdefault(p.name, {}).setdefault(p.column, []).append(p.value)
    out: dict[str, Any] = {}
    for key in order:
        if key in tables:
            out[key] = tables[key]
        else:
            values = scalars[key]
            out[key] = values[0] if len(values) == 1 else values
    return out
