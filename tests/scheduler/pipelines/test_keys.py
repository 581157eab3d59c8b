"""Step keys: what goes in, what does not, and ``changed`` naming the parts that differ."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from sortie.proto import messages as m
from sortie.proto.pipelines import StepKey, data_token, environment_digest
from sortie.scheduler.pipelines.keys import changed, step_key
from tests.scheduler.pipelines.builders import step


def test_key_fields() -> None:
    s = step("train", ["a"], ["b"], image="trainer:1")
    key = step_key(s, ["--lr", "0.1", data_token("a")], {"a": "m1"}, "sha256:abc")
    assert key == StepKey(
        snapshot_id="snap-train",
        script="train.py",
        arguments=["--lr", "0.1", data_token("a")],
        environment=environment_digest(s.run.environment),
        image="trainer:1",
        image_id="sha256:abc",
        inputs={"a": "m1"},
    )


def test_env_vars_are_in_the_key_and_a_secret_by_name_only() -> None:
    """A changed variable (v1's params arrive as AML_PARAMETER_*) changes the key; a secret
    counts by its name, and its value is in no key."""
    s = step("a")

    def with_env(env: dict[str, str], secrets: list[str] | None = None) -> StepKey:
        run = msgspec.structs.replace(s.run, env_vars=env, secret_env_names=secrets or [])
        return step_key(msgspec.structs.replace(s, run=run), [], {})

    one = with_env({"AML_PARAMETER_lr": "0.1", "B": "x"}, ["TOKEN"])
    assert one.env == {"AML_PARAMETER_lr": "0.1", "B": "x", "TOKEN": None}
    assert "hunter2" not in repr(one) and b"hunter2" not in msgspec.msgpack.encode(one)
    assert changed(one, with_env({"AML_PARAMETER_lr": "0.2", "B": "x"}, ["TOKEN"])) == ["env"]
    assert changed(one, with_env({"AML_PARAMETER_lr": "0.1", "B": "x"})) == ["env"]
    assert changed(one, with_env({"B": "x", "AML_PARAMETER_lr": "0.1"}, ["TOKEN"])) == []
    assert one.digest() == with_env({"B": "x", "AML_PARAMETER_lr": "0.1"}, ["TOKEN"]).digest()


def test_a_key_without_variables_digests_as_a_stored_one() -> None:
    """A key recorded before env was a part decodes, and one without variables has the same
    digest as before (its reuse still holds)."""

    class OldKey(msgspec.Struct, frozen=True, kw_only=True):
        snapshot_id: str
        script: str
        arguments: list[str]
        environment: str
        image: str | None
        inputs: dict[str, str]

    old = OldKey(
        snapshot_id="s", script="t.py", arguments=[], environment="e", image=None, inputs={"a": "m"}
    )
    stored = msgspec.msgpack.encode(old)
    key = msgspec.msgpack.decode(stored, type=StepKey)
    assert key.env == {}
    assert key.digest() == hashlib.sha256(stored).hexdigest()


def test_image_only_with_a_container() -> None:
    s = step("a")
    off = msgspec.structs.replace(
        s.run,
        environment=m.Environment(docker=m.DockerSection(enabled=False, base_image="x:1")),
    )
    assert step_key(s, [], {}, "sha256:abc").image is None
    assert step_key(s, [], {}, "sha256:abc").image_id is None
    assert step_key(msgspec.structs.replace(s, run=off), [], {}).image is None
    assert step_key(msgspec.structs.replace(s, run=off), [], {}, "sha256:abc").image_id is None


def test_a_tag_re_pointed_to_another_image_changes_the_key() -> None:
    """The same reference with another image ID under it is a changed image."""
    s = step("a", image="trainer:latest")
    one, two = step_key(s, [], {}, "sha256:1"), step_key(s, [], {}, "sha256:2")
    assert one.image == two.image == "trainer:latest"
    assert changed(one, two) == ["image"]
    assert one.digest() != two.digest()
    assert changed(one, step_key(s, [], {}, "sha256:1")) == []


def test_input_order_does_not_change_the_digest() -> None:
    s = step("j", ["a", "b"])
    one = step_key(s, [], {"a": "1", "b": "2"})
    two = step_key(s, [], {"b": "2", "a": "1"})
    assert one == two
    assert one.digest() == two.digest()


def test_what_is_not_in_the_key() -> None:
    """Target, resources, tags and the client's submission id do not change it."""
    s = step("a")
    moved = msgspec.structs.replace(
        s.run,
        target="gpu-cluster",
        resources=m.Resources(cpus=8, gpus=1),
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
    ("the image ID under the same reference", {"image_id": "sha256:2"}, ["image"]),
    ("reference and image ID", {"image": "img:2", "image_id": "sha256:2"}, ["image"]),
    ("a variable", {"env": {"AML_PARAMETER_x": "2"}}, ["env"]),
    ("one input's content", {"inputs": {"a": "m1", "b": "m9"}}, ["inputs.b"]),
    ("an input added", {"inputs": {"a": "m1", "b": "m2", "c": "m3"}}, ["inputs.c"]),
    ("an input gone", {"inputs": {"b": "m2"}}, ["inputs.a"]),
    (
        "all of it, in KEY_PARTS order",
        {
            "inputs": {"a": "x", "b": "y"},
            "image": "i",
            "env": {"X": None},
            "environment": "e",
            "arguments": [],
            "script": "s",
            "snapshot_id": "z",
        },
        [
            "snapshot_id",
            "script",
            "arguments",
            "environment",
            "image",
            "env",
            "inputs.a",
            "inputs.b",
        ],
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_changed(changes: dict[str, object], expected: list[str]) -> None:
    new = msgspec.structs.replace(BASE, **changes)
    assert changed(BASE, new) == expected
    assert (new.digest() == BASE.digest()) == (expected == [])
