"""A sweep's search space: the parameter expressions of the hosted platform's SDK v1
(``azureml.train.hyperdrive.parameter_expressions``), with its names, signatures and checks.

Each function checks its arguments as v1 does and returns the wire expression
(``proto.sweeps.Expression``) that goes into a sampling's ``parameter_space``. v1's own
functions return lists (``["uniform", [0.1, 0.5]]``); a space written with such lists is
accepted too (:func:`as_expression`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sortie.proto import sweeps as s


class SweepConfigError(ValueError):
    """A sweep's configuration that cannot be submitted: says what was wrong and what to do."""


def _number(fn: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SweepConfigError(f"{fn}(): {name} must be a finite number, got {value!r}")
    return float(value)


def _whole(fn: str, value: object) -> float:
    """``q``: a positive whole number (v1 takes an int, or a float with no fraction)."""
    q = _number(fn, "q", value)
    if not q.is_integer() or q < 1:
        raise SweepConfigError(f"{fn}(): q must be a positive whole number, got {value!r}")
    return q


def _bounds(fn: str, min_value: object, max_value: object, *, strict: bool) -> tuple[float, float]:
    low, high = _number(fn, "min_value", min_value), _number(fn, "max_value", max_value)
    if low > high or (strict and low == high):
        rule = "min_value < max_value" if strict else "min_value <= max_value"
        raise SweepConfigError(f"{fn}({min_value!r}, {max_value!r}): needs {rule}")
    return low, high


def _sigma(fn: str, mu: object, sigma: object) -> tuple[float, float]:
    mean, spread = _number(fn, "mu", mu), _number(fn, "sigma", sigma)
    if spread < 0:
        raise SweepConfigError(f"{fn}(): sigma must not be negative, got {sigma!r}")
    return mean, spread


def choice(*options: Any) -> s.Choice:
    """One of the options: ``choice(1, 2, 3)``, ``choice([1, 2, 3])`` or ``choice(range(4))``.
    Values are numbers, strings or booleans; either all of them are strings or none is."""
    if len(options) == 1 and isinstance(options[0], list | tuple | range):
        values = list(options[0])
    elif any(isinstance(o, list | tuple | range) for o in options):
        raise SweepConfigError(
            "choice(): give the options as arguments (choice(1, 2, 3)), or one list or range "
            "(choice([1, 2, 3]), choice(range(4))), not several lists"
        )
    else:
        values = list(options)
    if not values:
        raise SweepConfigError("choice(): give at least one option")
    for v in values:
        if not isinstance(v, int | float | str) or (isinstance(v, float) and not math.isfinite(v)):
            raise SweepConfigError(
                f"choice(): {v!r} is not a number, string or boolean (the values a script "
                "argument can be)"
            )
    strings = sum(isinstance(v, str) for v in values)
    if strings not in (0, len(values)):
        raise SweepConfigError(
            f"choice({', '.join(map(repr, values))}): either all the options are strings or "
            "none is (write numbers as numbers, or all of them as strings)"
        )
    return s.Choice(values=values)


def randint(upper: int) -> s.RandInt:
    """An integer in ``[0, upper)``."""
    if isinstance(upper, bool) or not isinstance(upper, int) or upper <= 0:
        raise SweepConfigError(f"randint(): upper must be a positive integer, got {upper!r}")
    return s.RandInt(upper=upper)


def uniform(min_value: float, max_value: float) -> s.Uniform:
    """Uniform between ``min_value`` and ``max_value``."""
    low, high = _bounds("uniform", min_value, max_value, strict=True)
    return s.Uniform(min_value=low, max_value=high)


def quniform(min_value: float, max_value: float, q: int) -> s.QUniform:
    """``round(uniform(min_value, max_value) / q) * q``."""
    low, high = _bounds("quniform", min_value, max_value, strict=True)
    return s.QUniform(min_value=low, max_value=high, q=_whole("quniform", q))


def loguniform(min_value: float, max_value: float) -> s.LogUniform:
    """``exp(uniform(min_value, max_value))``: the bounds are logarithms (natural), as in v1:
    ``loguniform(-6, -1)`` draws between e^-6 and e^-1."""
    low, high = _bounds("loguniform", min_value, max_value, strict=False)
    return s.LogUniform(min_value=low, max_value=high)


def qloguniform(min_value: float, max_value: float, q: int) -> s.QLogUniform:
    """``round(exp(uniform(min_value, max_value)) / q) * q``."""
    low, high = _bounds("qloguniform", min_value, max_value, strict=False)
    return s.QLogUniform(min_value=low, max_value=high, q=_whole("qloguniform", q))


def normal(mu: float, sigma: float) -> s.Normal:
    """Normal with mean ``mu`` and standard deviation ``sigma``."""
    mean, spread = _sigma("normal", mu, sigma)
    return s.Normal(mu=mean, sigma=spread)


def qnormal(mu: float, sigma: float, q: int) -> s.QNormal:
    """``round(normal(mu, sigma) / q) * q``."""
    mean, spread = _sigma("qnormal", mu, sigma)
    return s.QNormal(mu=mean, sigma=spread, q=_whole("qnormal", q))


def lognormal(mu: float, sigma: float) -> s.LogNormal:
    """``exp(normal(mu, sigma))``."""
    mean, spread = _sigma("lognormal", mu, sigma)
    return s.LogNormal(mu=mean, sigma=spread)


def qlognormal(mu: float, sigma: float, q: int) -> s.QLogNormal:
    """``round(exp(normal(mu, sigma)) / q) * q``."""
    mean, spread = _sigma("qlognormal", mu, sigma)
    return s.QLogNormal(mu=mean, sigma=spread, q=_whole("qlognormal", q))


# name -> the function that makes it (also what the CLI's and job file's text may call)
EXPRESSIONS: dict[str, Any] = {
    "choice": choice,
    "randint": randint,
    "uniform": uniform,
    "quniform": quniform,
    "loguniform": loguniform,
    "qloguniform": qloguniform,
    "normal": normal,
    "qnormal": qnormal,
    "lognormal": lognormal,
    "qlognormal": qlognormal,
}


def as_expression(name: str, value: object) -> s.Expression:
    """One parameter's expression: what the functions above return, or v1's list form
    (``["choice", [[1, 2]]]``, ``["uniform", [0, 1]]``)."""
    if isinstance(value, s.ExpressionBase):
        return value  # type: ignore[return-value]  # every ExpressionBase is an Expression
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and value[0] in EXPRESSIONS
        and isinstance(value[1], list | tuple)
    ):
        args = value[1]
        try:
            made: s.Expression = EXPRESSIONS[value[0]](*args)
        except TypeError as exc:
            raise SweepConfigError(f"parameter {name!r}: {value!r}: {exc}") from None
        return made
    raise SweepConfigError(
        f"parameter {name!r}: {value!r} is not a parameter expression: use choice(...), "
        f"uniform(...), ... ({', '.join(EXPRESSIONS)})"
    )


def as_space(parameter_space: Mapping[str, object]) -> dict[str, s.Expression]:
    """A sampling's ``parameter_space`` as the wire's: names checked, expressions made."""
    if not isinstance(parameter_space, Mapping) or not parameter_space:
        raise SweepConfigError(
            "parameter_space must be a non-empty dict of parameter name -> expression, e.g. "
            '{"learning_rate": loguniform(-6, -1)}'
        )
    out: dict[str, s.Expression] = {}
    for name, value in parameter_space.items():
        if not isinstance(name, str) or not name.lstrip("-") or any(c.isspace() for c in name):
            raise SweepConfigError(
                f"parameter name {name!r}: give the script argument's name without spaces "
                "(learning_rate or --learning_rate)"
            )
        out[name] = as_expression(name, value)
    arguments = [s.argument_name(n) for n in out]
    if len(set(arguments)) != len(arguments):
        raise SweepConfigError(
            f"parameter_space names the same script argument twice ({', '.join(out)}): "
            "'lr' and '--lr' are both --lr"
        )
    return out
