"""A sweep written as text (the CLI's ``--param 'lr=loguniform(-6, -1)'`` and ``--policy
'bandit(slack_factor=0.1)'``, a job file's ``sweep:`` section), read safely: the text is
parsed with ``ast`` and only a call of a known name with literal arguments (numbers, strings,
booleans, lists, ``range(...)``) is accepted; nothing is evaluated. The calls are the SDK's
own functions and classes, so text and code are checked alike.
"""

from __future__ import annotations

import ast
from typing import Any

from sortie.client.sweep_space import EXPRESSIONS, SweepConfigError
from sortie.client.sweeps import (
    AshaPolicy,
    BanditPolicy,
    BayesianParameterSampling,
    EarlyTerminationPolicy,
    GridParameterSampling,
    HyperParameterSampling,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    RandomParameterSampling,
    TruncationSelectionPolicy,
)
from sortie.proto import sweeps as s

POLICIES: dict[str, type[EarlyTerminationPolicy]] = {
    "none": NoTerminationPolicy,
    "bandit": BanditPolicy,
    "median": MedianStoppingPolicy,
    "truncation": TruncationSelectionPolicy,
    "asha": AshaPolicy,
}
SAMPLINGS = ("random", "grid", "bayesian")


def _literal(node: ast.expr, text: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, int | float)
        and not isinstance(node.operand.value, bool)
    ):
        value = node.operand.value
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e, text) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        bounds = [_literal(a, text) for a in node.args]
        if node.keywords or not 1 <= len(bounds) <= 3 or not all(type(b) is int for b in bounds):
            raise SweepConfigError(f"{text!r}: range() takes one to three integers")
        return range(*bounds)
    raise SweepConfigError(
        f"{text!r}: {ast.unparse(node)!r} is not a literal (give numbers, quoted strings, "
        "true/false or [lists])"
    )


def call(text: str) -> tuple[str, list[Any], dict[str, Any]]:
    """``NAME(ARGS)`` (or a bare ``NAME``) as the name, its arguments and its keywords."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise SweepConfigError(f"{text!r} is not of the form name(arguments)") from None
    if isinstance(tree, ast.Name):
        return tree.id, [], {}
    if not isinstance(tree, ast.Call) or not isinstance(tree.func, ast.Name):
        raise SweepConfigError(f"{text!r} is not of the form name(arguments)")
    args = [_literal(a, text) for a in tree.args]
    kwargs = {k.arg: _literal(k.value, text) for k in tree.keywords if k.arg is not None}
    if len(kwargs) != len(tree.keywords):
        raise SweepConfigError(f"{text!r}: ** is not accepted")
    return tree.func.id, args, kwargs


def _made(text: str, what: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    try:
        return what(*args, **kwargs)
    except TypeError as exc:  # a wrong number or name of arguments
        raise SweepConfigError(f"{text!r}: {exc}") from None


def expression(text: str) -> s.Expression:
    """``loguniform(-6, -1)``, ``choice(16, 32, 64)``, ``choice('a', 'b')``, ..."""
    name, args, kwargs = call(text)
    if name not in EXPRESSIONS:
        raise SweepConfigError(f"{text!r}: {name!r} is not one of {', '.join(EXPRESSIONS)}")
    made: s.Expression = _made(text, EXPRESSIONS[name], args, kwargs)
    return made


def param(text: str) -> tuple[str, s.Expression]:
    """``NAME=EXPRESSION`` (``lr=loguniform(-6, -1)``)."""
    name, eq, expr = text.partition("=")
    if not eq or not name.strip() or "(" in name:
        raise SweepConfigError(
            f"{text!r} is not NAME=EXPRESSION, e.g. lr=loguniform(-6,-1) or batch=choice(16,32)"
        )
    return name.strip(), expression(expr)


def policy(text: str) -> EarlyTerminationPolicy:
    """``none``, ``bandit(slack_factor=0.1, evaluation_interval=1)``, ``median()``,
    ``truncation(truncation_percentage=20)``, ``asha(grace_period=1)``."""
    name, args, kwargs = call(text)
    if name not in POLICIES:
        raise SweepConfigError(f"policy {text!r}: {name!r} is not one of {', '.join(POLICIES)}")
    made: EarlyTerminationPolicy = _made(f"policy {text}", POLICIES[name], args, kwargs)
    return made


def sampling(kind: str, space: dict[str, s.Expression], seed: int | None) -> HyperParameterSampling:
    """The sampling named ``kind`` (random, grid, bayesian) over ``space``."""
    if kind == "grid":
        if seed is not None:
            raise SweepConfigError("a grid is not drawn at random: give no seed with grid")
        return GridParameterSampling(space)
    if kind == "random":
        return RandomParameterSampling(space, seed=seed)
    if kind == "bayesian":
        return BayesianParameterSampling(space, seed=seed)
    raise SweepConfigError(f"sampling {kind!r}: give one of {', '.join(SAMPLINGS)}")
