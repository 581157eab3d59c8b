"""Drawing parameters: v1's formula for each expression, determinism by (seed, index, name),
bounds, q rounding, and the grid covering its space exactly once in itertools.product order."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from sortie.proto.sweeps import (
    Choice,
    Expression,
    LogNormal,
    LogUniform,
    Normal,
    QLogNormal,
    QLogUniform,
    QNormal,
    QUniform,
    RandInt,
    Uniform,
)
from sortie.scheduler.sweeps.space import (
    draw,
    grid_point,
    grid_size,
    quantize,
    random_params,
    unit,
)

SPACE: dict[str, Expression] = {
    "choice": Choice(values=[16, 32, "x", True]),
    "randint": RandInt(upper=5),
    "uniform": Uniform(min_value=-1.0, max_value=3.0),
    "quniform": QUniform(min_value=0.0, max_value=1.0, q=0.25),
    "loguniform": LogUniform(min_value=-6.0, max_value=-1.0),
    "qloguniform": QLogUniform(min_value=0.0, max_value=5.0, q=2.0),
    "normal": Normal(mu=10.0, sigma=2.0),
    "qnormal": QNormal(mu=10.0, sigma=2.0, q=0.5),
    "lognormal": LogNormal(mu=0.0, sigma=0.5),
    "qlognormal": QLogNormal(mu=2.0, sigma=0.5, q=1.0),
}
DRAWS = 2000


def _draws(name: str, seed: int = 3) -> list[object]:
    return [draw(SPACE[name], seed, i, name) for i in range(DRAWS)]


def test_same_seed_same_params_other_seed_other_params() -> None:
    assert random_params(SPACE, 1, 7) == random_params(SPACE, 1, 7)
    assert random_params(SPACE, 1, 7) != random_params(SPACE, 2, 7)
    assert random_params(SPACE, 1, 7) != random_params(SPACE, 1, 8)


def test_a_parameter_depends_on_its_own_name_only() -> None:
    """Adding a parameter to the space changes no other parameter's values."""
    small = {"uniform": SPACE["uniform"]}
    assert random_params(small, 5, 3)["uniform"] == random_params(SPACE, 5, 3)["uniform"]
    assert list(random_params(SPACE, 5, 3)) == list(SPACE)  # the space's order


def test_unit_is_in_zero_one() -> None:
    values = [unit(9, i, "p") for i in range(DRAWS)]
    assert all(0.0 <= u < 1.0 for u in values)
    assert 0.45 < statistics.fmean(values) < 0.55


def test_choice_and_randint() -> None:
    assert set(_draws("choice")) == {16, 32, "x", True}
    assert set(_draws("randint")) == {0, 1, 2, 3, 4}  # [0, upper)


def test_uniform_bounds() -> None:
    values = _draws("uniform")
    assert all(-1.0 <= v < 3.0 for v in values)  # type: ignore[operator]
    assert 0.8 < statistics.fmean(values) < 1.2  # type: ignore[arg-type]


def test_loguniform_is_exp_of_uniform() -> None:
    """v1: the bounds are exponents, the value exp(uniform(min, max))."""
    values = _draws("loguniform")
    assert all(math.exp(-6) <= v < math.exp(-1) for v in values)  # type: ignore[operator]
    logs = [math.log(v) for v in values]  # type: ignore[arg-type]
    assert -3.7 < statistics.fmean(logs) < -3.3


def test_q_expressions_round_to_multiples_of_q() -> None:
    assert set(_draws("quniform")) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert {0.0, 1.0} <= set(_draws("quniform"))  # round(), so the ends come up (half as often)
    assert set(_draws("qloguniform")) <= set(range(0, 149, 2))  # exp(0..5) = 1..148.4
    assert all(isinstance(v, int) and v % 2 == 0 for v in _draws("qloguniform"))
    assert all(v % 0.5 == 0 for v in _draws("qnormal"))  # type: ignore[operator]
    assert all(isinstance(v, int) and v >= 0 for v in _draws("qlognormal"))


def test_normal_family_moments() -> None:
    normal = _draws("normal")
    assert 9.8 < statistics.fmean(normal) < 10.2  # type: ignore[arg-type]
    assert 1.8 < statistics.stdev(normal) < 2.2  # type: ignore[arg-type]
    logs = [math.log(v) for v in _draws("lognormal")]  # type: ignore[arg-type]
    assert -0.05 < statistics.fmean(logs) < 0.05
    assert 0.45 < statistics.stdev(logs) < 0.55


@pytest.mark.parametrize(
    ("x", "q", "expected"),
    [
        (0.3, 0.1, 0.3),  # not 0.30000000000000004
        (0.26, 0.25, 0.25),
        (31.6, 1.0, 32),  # a whole q gives an int
        (7.0, 2.0, 8),  # round half to even: 3.5 -> 4
        (-1.26, 0.5, -1.5),
    ],
)
def test_quantize(x: float, q: float, expected: float) -> None:
    got = quantize(x, q)
    assert got == expected
    assert type(got) is type(expected)


def test_grid_is_itertools_product_in_the_space_order() -> None:
    space: dict[str, Expression] = {
        "a": Choice(values=[1, 2, 3]),
        "b": Choice(values=["x", "y"]),
        "c": Choice(values=[0.1, 0.2]),
    }
    assert grid_size(space) == 12
    points = [grid_point(space, i) for i in range(12)]
    assert [tuple(p.values()) for p in points] == list(
        itertools.product(
            *(
                e.values
                for e in space.values()  # type: ignore[union-attr]
            )
        )
    )
    assert all(list(p) == ["a", "b", "c"] for p in points)
    with pytest.raises(IndexError):
        grid_point(space, 12)


def test_grid_of_a_non_choice_space_is_empty() -> None:
    assert grid_size({"a": Choice(values=[1]), "u": Uniform(min_value=0, max_value=1)}) == 0
