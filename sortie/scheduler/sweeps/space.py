"""Drawing a trial's parameters from the search space: v1's formulas for every expression,
random draws that depend only on ``(seed, trial index, parameter name)``, and the grid.

No ``random`` module: each draw is a SHA-256 of ``seed/index/name/k`` read as a number in
``[0, 1)``. So trial 7 of a sweep gets the same parameters whether the scheduler drew trials
0..6 before it or was restarted just now, and adding a parameter to the space changes no other
parameter's values.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Mapping

from sortie.proto.sweeps import (
    Choice,
    Expression,
    LogNormal,
    LogUniform,
    Normal,
    ParamValue,
    QLogNormal,
    QLogUniform,
    QNormal,
    QUniform,
    RandInt,
    Uniform,
)

_UNIT = float(1 << 53)
_LOG_MAX = math.log(sys.float_info.max)


def unit(seed: int, index: int, name: str, k: int = 0) -> float:
    """A number in ``[0, 1)`` that depends only on its arguments (53 bits, as a float has)."""
    digest = hashlib.sha256(f"{seed}/{index}/{name}/{k}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / _UNIT


def _normal(seed: int, index: int, name: str, mu: float, sigma: float) -> float:
    """Box-Muller on two of the parameter's own draws."""
    u1 = 1.0 - unit(seed, index, name, 0)  # (0, 1]: log is defined
    u2 = unit(seed, index, name, 1)
    return mu + sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def quantize(x: float, q: float) -> float | int:
    """v1's ``round(x / q) * q``; an int when ``q`` is whole (``quniform(1, 64, 1)`` gives
    ``32``, not ``32.0``, so a script's ``type=int`` argument takes it), else the float with
    the binary noise of the product trimmed (``0.3``, not ``0.30000000000000004``)."""
    steps = round(x / q)
    if float(q).is_integer():
        return int(steps * int(q))
    return float(f"{steps * q:.12g}")


def draw(expr: Expression, seed: int, index: int, name: str) -> ParamValue:
    """Trial ``index``'s value of parameter ``name`` (random sampling)."""
    if isinstance(expr, Choice):
        return expr.values[_below(seed, index, name, len(expr.values))]
    if isinstance(expr, RandInt):
        return _below(seed, index, name, expr.upper)
    x = _continuous(expr, seed, index, name)
    if isinstance(expr, QUniform | QLogUniform | QNormal | QLogNormal):
        return quantize(x, expr.q)
    return x


def _continuous(expr: Expression, seed: int, index: int, name: str) -> float:
    """The draw before v1's rounding (``round(x / q) * q`` for the q-expressions)."""
    match expr:
        case Uniform(min_value=lo, max_value=hi) | QUniform(min_value=lo, max_value=hi):
            return lo + unit(seed, index, name) * (hi - lo)
        case LogUniform(min_value=lo, max_value=hi) | QLogUniform(min_value=lo, max_value=hi):
            return _exp(lo + unit(seed, index, name) * (hi - lo))
        case Normal(mu=mu, sigma=sigma) | QNormal(mu=mu, sigma=sigma):
            return _normal(seed, index, name, mu, sigma)
        case LogNormal(mu=mu, sigma=sigma) | QLogNormal(mu=mu, sigma=sigma):
            return _exp(_normal(seed, index, name, mu, sigma))
        case _:
            raise TypeError(f"{expr!r} is not a continuous expression")


def _exp(x: float) -> float:
    """``exp`` that gives the largest float instead of raising past it (a lognormal's tail)."""
    return math.exp(min(x, _LOG_MAX))


def _below(seed: int, index: int, name: str, n: int) -> int:
    """An integer in ``[0, n)`` from the whole digest (its bias is below 2**-200)."""
    digest = hashlib.sha256(f"{seed}/{index}/{name}/int".encode()).digest()
    return int.from_bytes(digest, "big") % n


def random_params(space: Mapping[str, Expression], seed: int, index: int) -> dict[str, ParamValue]:
    """Trial ``index``'s parameters, in the space's order."""
    return {name: draw(expr, seed, index, name) for name, expr in space.items()}


# --- grid ----------------------------------------------------------------------------------


def grid_size(space: Mapping[str, Expression]) -> int:
    """How many points the grid has: the product of the choices' lengths (0 if any
    expression is not a ``Choice``; ``validate.problem`` refuses such a grid)."""
    size = 1
    for expr in space.values():
        if not isinstance(expr, Choice):
            return 0
        size *= len(expr.values)
    return size


def grid_point(space: Mapping[str, Expression], index: int) -> dict[str, ParamValue]:
    """The grid's point ``index``: ``itertools.product`` over the choices in the space's
    order (the last parameter varies fastest), reached by mixed-radix digits so a sweep goes
    on from ``issued`` without enumerating the points before it."""
    if not 0 <= index < grid_size(space):
        raise IndexError(f"grid point {index} is outside the grid of {grid_size(space)}")
    choices = [(name, expr.values) for name, expr in space.items() if isinstance(expr, Choice)]
    out: dict[str, ParamValue] = {}
    rest = index
    for name, values in reversed(choices):
        rest, digit = divmod(rest, len(values))
        out[name] = values[digit]
    return {name: out[name] for name, _ in choices}
