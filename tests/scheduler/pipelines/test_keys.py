"""Step keys: what goes in, what does not, and ``changed`` naming the parts that differ."""

from __future__ import annotations

import msgspec
import pytest

from sortie.proto import messages as m
from sortie.proto.pipelines import StepKey, data_token, environment_digest
from sortie.scheduler.pipelines.keys import changed, step_key
from tests.scheduler.pipelines.builders import step


def test_key_fields() -> None:
    s = step("train", ["a"], ["b"], image="trainer:1")
    key = step_key(s, ["--lr", "0.1", data_token("a")], {"a": "m1"})
    assert key == StepKey(
        snapshot_id="snap-train",
        script="train.py",
        arguments=["--lr", "0.1", data_token("a")],
        environment=environment_digest(s.run.environment),
        image="trainer:1",
        inputs={"a": "m1"},
    )


def test_image_only_with_a_container() -> None:
    s = step("a")
    off = msgspec.structs.replace(
        s.run,
        environment=m.Environment(docker=m.DockerSection(enabled=False, base_image="x:1")),
    )
    assert step_key(s, [], {}).image is None
    assert step_key(msgspec.structs.replace(s, run=off), [], {}).image is None


def test_input_order_does_not_change_the_digest() -> None:
    s = step("j", ["a", "b"])
    one = step_key(s, [], {"a": "1", "b": "2"})
    two = step_key(s, [], {"b": "2", "a": "1"})
    assert one == two
    assert one.digest() == two.digest()


def test_what_is_not_in_the_key() -> None:
    """Target, resources, env vars, tags and the client's submission id do not change it."""
    s = step("a")
    moved = msgspec.structs.replace(
        s.run,
        target="gpu-cluster",
        resources=m.Resources(cpus=8, gpus=1),
        env_vars={"X": "1"},
        tags={"t": "v"},
        submission_id="other",
    )
    assert step_key(msgspec.structs.replace(s, run=moved), [], {}) == step_key(s, [], {})


BASE = StepKey(
    snapshot_id="s1",
    script="t.py",
    arguments=["--x", "1"],
    environment="e1",
    image=None,
    inputs={"a": "m1", "b": "m2"},
)

# (what, changes to BASE, changed parts)
CHANGES: list[tuple[str, dict[str, object], list[str]]] = [
    ("nothing", {}, []),
    ("snapshot", {"snapshot_id": "s2"}, ["snapshot_id"]),
    (
        "script and arguments",
        {"script": "u.py", "arguments": ["--x", "2"]},
        ["script", "arguments"],
    ),
    ("environment", {"environment": "e2"}, ["environment"]),
    ("image", {"image": "img:2"}, ["image"]),
    ("one input's content", {"inputs": {"a": "m1", "b": "m9"}}, ["inputs.b"]),
    ("an input added", {"inputs": {"a": "m1", "b": "m2", "c": "m3"}}, ["inputs.c"]),
    ("an input gone", {"inputs": {"b": "m2"}}, ["inputs.a"]),
    (
        "all of it, in KEY_PARTS order",
        {
            "inputs": {"a": "x", "b": "y"},
            "image": "i",
            "environment": "e",
            "arguments": [],
            "script": "s",
            "snapshot_id": "z",
        },
        ["snapshot_id", "script", "arguments", "environment", "image", "inputs.a", "inputs.b"],
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_changed(changes: dict[str, object], expected: list[str]) -> None:
    new = msgspec.structs.replace(BASE, **changes)
    assert changed(BASE, new) == expected
    assert (new.digest() == BASE.digest()) == (expected == [])
