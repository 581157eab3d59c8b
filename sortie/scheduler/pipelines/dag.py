"""A pipeline's graph: which step feeds which. Pure.

An edge ``a -> b`` means ``b`` needs ``a`` first: ``a`` produces a PipelineData ``b`` reads, or
``b`` names ``a`` in its ``run_after``. Built from any spec, even a wrong one (``validate``
reports what is wrong): an input nobody produces and a ``run_after`` naming no step add no
edge; of two producers of one output the first in the spec's order counts. Every listing is
in the spec's order, so the same spec always gives the same order and the same cycle.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from sortie.proto.pipelines import PipelineSpec


@dataclass(frozen=True)
class Dag:
    steps: tuple[str, ...]  # every step, in the spec's order
    needs: dict[str, tuple[str, ...]]  # step -> the steps it needs directly (upstream edges)
    feeds: dict[str, tuple[str, ...]]  # step -> the steps that need it directly
    producer: dict[str, str]  # PipelineData name -> the step that writes it


def build(spec: PipelineSpec) -> Dag:
    steps = tuple(dict.fromkeys(s.name for s in spec.steps))
    producer: dict[str, str] = {}
    for s in spec.steps:
        for out in s.outputs:
            producer.setdefault(out, s.name)
    needs: dict[str, dict[str, None]] = {name: {} for name in steps}
    for s in spec.steps:
        for name in s.inputs:
            if name in producer:
                needs[s.name][producer[name]] = None
        for name in s.run_after:
            if name in needs:
                needs[s.name][name] = None
    feeds: dict[str, list[str]] = {name: [] for name in steps}
    for name in steps:  # the spec's order, so each step's ``feeds`` is in it too
        for up in needs[name]:
            feeds[up].append(name)
    return Dag(
        steps=steps,
        needs={n: tuple(up) for n, up in needs.items()},
        feeds={n: tuple(down) for n, down in feeds.items()},
        producer=producer,
    )


def upstream(dag: Dag, step: str) -> set[str]:
    """Every step ``step`` needs, directly or through others."""
    return _reach(dag.needs, step)


def downstream(dag: Dag, step: str) -> set[str]:
    """Every step that needs ``step``, directly or through others."""
    return _reach(dag.feeds, step)


def _reach(edges: dict[str, tuple[str, ...]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    return seen


def cycle(dag: Dag) -> list[str] | None:
    """The steps of one cycle, first step repeated at the end (``["a", "b", "a"]``: ``a``
    feeds ``b``, ``b`` feeds ``a``), or None. Depth first from each step in the spec's order,
    without recursion (a chain of MAX_STEPS steps is fine)."""
    done: set[str] = set()
    for root in dag.steps:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        stack = [iter(dag.feeds[root])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                name = path.pop()
                on_path.discard(name)
                done.add(name)
                stack.pop()
                continue
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(dag.feeds[nxt]))
    return None


def order(dag: Dag) -> list[str]:
    """The steps so that each comes after every step it needs; among steps free at once, the
    spec's order first. Raises ``ValueError`` naming a cycle when there is one."""
    left = {name: len(up) for name, up in dag.needs.items()}
    index = {name: i for i, name in enumerate(dag.steps)}
    heap = [(index[n], n) for n, k in left.items() if k == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, name = heapq.heappop(heap)
        out.append(name)
        for down in dag.feeds[name]:
            left[down] -= 1
            if left[down] == 0:
                heapq.heappush(heap, (index[down], down))
    if len(out) < len(dag.steps):
        found = cycle(dag)
        raise ValueError(f"the steps form a cycle: {' -> '.join(found or [])}")
    return out
