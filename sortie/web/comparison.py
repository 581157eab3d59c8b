"""Runs side by side, for the compare view: one row per setting (arguments, environment
variables, resources, target, environment, git) and per final metric, a value per run, marked
where the runs differ; and every numeric metric as one series per run. Pure: records and
metric points in, plain JSON-ready data out.

Secret environment variables are named, never valued (their values are not in a record).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from sortie.proto import messages as m

MAX_RUNS = 10  # runs compared at once: more make charts no one can read
HIDDEN = "(secret)"
GROUPS = (  # the table's sections, in order
    "run",
    "script",
    "arguments",
    "environment variables",
    "resources",
    "environment",
    "git",
    "tags",
    "final metrics",
)  # what a secret variable shows instead of its value


def run_ids(raw: str) -> list[str]:
    """The ids of ``?runs=a,b,c``: in order, once each, blanks dropped."""
    seen: dict[str, None] = {}
    for part in raw.split(","):
        if part.strip():
            seen.setdefault(part.strip(), None)
    return list(seen)


def too_many(ids: Sequence[str]) -> str | None:
    if len(ids) <= MAX_RUNS:
        return None
    return (
        f"{len(ids)} runs asked for: compare at most {MAX_RUNS} at once (remove some from the list)"
    )


def argument_pairs(arguments: Sequence[str]) -> list[tuple[str, str]]:
    """A script's arguments as (name, value): ``--lr 0.1`` and ``--lr=0.1`` give
    ("--lr", "0.1"), a flag alone gives ("--flag", "true"), the rest ("arg N", value)."""
    out: list[tuple[str, str]] = []
    i, n = 0, 0
    while i < len(arguments):
        token = arguments[i]
        if token.startswith("-") and len(token) > 1 and not _is_number(token):
            name, eq, value = token.partition("=")
            if eq:
                out.append((name, value))
            elif i + 1 < len(arguments) and not _is_option(arguments[i + 1]):
                out.append((name, arguments[i + 1]))
                i += 1
            else:
                out.append((name, "true"))
        else:
            n += 1
            out.append((f"arg {n}", token))
        i += 1
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_option(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _is_number(token)


def _environment(env: m.Environment) -> str:
    py = env.python
    if py.user_managed:
        text = f"user-managed: {py.interpreter or 'the agent`s python'}"
    else:
        packages = [*py.pip, *py.conda]
        text = "built: " + (", ".join(packages) or "no packages")
        if py.python_version:
            text += f" (python {py.python_version})"
    if env.docker.enabled:
        text += f"; container {env.docker.base_image or 'default image'}"
    return text


def settings(rec: m.RunRecord) -> list[tuple[str, str, str]]:
    """(group, name, value) of everything a run was configured with."""
    spec = rec.spec
    res = spec.resources
    rows: list[tuple[str, str, str]] = [
        ("run", "experiment", spec.experiment),
        ("run", "state", str(rec.state)),
        ("run", "target", spec.target),
        ("run", "agent", rec.agent_id or ""),
        ("run", "attempt", str(rec.attempt)),
        ("script", "script", spec.script),
        ("script", "command line", shlex.join(spec.arguments)),
    ]
    rows += [("arguments", name, value) for name, value in argument_pairs(spec.arguments)]
    rows += [("environment variables", k, v) for k, v in sorted(spec.env_vars.items())]
    rows += [("environment variables", k, HIDDEN) for k in sorted(spec.secret_env_names)]
    rows += [
        ("resources", "cpus", f"{res.cpus:g}"),
        ("resources", "memory", f"{res.memory_mb} MB" if res.memory_mb else ""),
        ("resources", "gpus", f"{res.gpus}" + (f" {res.gpu_type}" if res.gpu_type else "")),
        ("resources", "nodes", str(spec.node_count)),
        ("resources", "priority", str(spec.priority)),
        ("environment", "python", _environment(spec.environment)),
    ]
    git = spec.git or m.GitInfo()
    rows += [
        ("git", "commit", (git.commit or "")[:12]),
        ("git", "branch", git.branch or ""),
        ("git", "dirty", "yes" if git.dirty else "no" if git.commit else ""),
    ]
    rows += [("tags", k, v) for k, v in sorted(rec.tags.items())]
    return rows


def _plain(points: Sequence[m.MetricPoint]) -> dict[str, list[m.MetricPoint]]:
    """Each plain metric's points (table cells are not metrics over time), by name."""
    out: dict[str, list[m.MetricPoint]] = {}
    for p in points:
        if p.column is None:
            out.setdefault(p.name, []).append(p)
    return out


def series(points: Sequence[m.MetricPoint]) -> dict[str, dict[str, list[float]]]:
    """Each numeric metric as x (its steps, or log order where a point has no step) and y."""
    out: dict[str, dict[str, list[float]]] = {}
    for name, pts in _plain(points).items():
        numeric = [
            (p.step, float(p.value))
            for p in pts
            if isinstance(p.value, int | float) and not isinstance(p.value, bool)
        ]
        if not numeric:
            continue
        steps = [step for step, _ in numeric if step is not None]
        xs = (
            [float(s) for s in steps]
            if len(steps) == len(numeric)
            else [*map(float, range(len(numeric)))]
        )
        out[name] = {"x": xs, "y": [y for _, y in numeric]}
    return out


def final_metrics(points: Sequence[m.MetricPoint]) -> dict[str, m.MetricValue]:
    return {name: pts[-1].value for name, pts in _plain(points).items()}


def _shown(value: m.MetricValue) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def compare(
    records: Sequence[m.RunRecord], points: Sequence[Sequence[m.MetricPoint]]
) -> dict[str, Any]:
    """The compare view's data for ``records`` (in order) and each one's metric points."""
    columns = [settings(r) for r in records]
    finals = [final_metrics(p) for p in points]
    keys: dict[tuple[str, str], None] = {}
    for col in columns:
        for group, name, _ in col:
            keys.setdefault((group, name), None)
    for name in sorted({n for f in finals for n in f}):
        keys.setdefault(("final metrics", name), None)
    lookups = [
        {
            **{(g, n): v for g, n, v in col},
            **{("final metrics", k): _shown(v) for k, v in f.items()},
        }
        for col, f in zip(columns, finals, strict=True)
    ]
    rows = []
    for group, name in sorted(keys, key=lambda k: GROUPS.index(k[0])):  # stable within a group
        values = [look.get((group, name)) for look in lookups]
        rows.append(
            {"group": group, "name": name, "values": values, "differs": len(set(values)) > 1}
        )
    # every chart has a series per run, in order (empty where a run lacks the metric), so a
    # run has the same colour in every chart
    per_run = [series(pts) for pts in points]
    charts = {
        name: [
            {"label": rec.run_id, **got.get(name, {"x": [], "y": []})}
            for rec, got in zip(records, per_run, strict=True)
        ]
        for name in sorted({n for got in per_run for n in got})
    }
    return {
        "runs": [
            {
                "run_id": r.run_id,
                "experiment": r.spec.experiment,
                "state": str(r.state),
                "created_at": r.created_at,
            }
            for r in records
        ],
        "rows": rows,
        "charts": [{"name": n, "series": s} for n, s in charts.items()],
    }
