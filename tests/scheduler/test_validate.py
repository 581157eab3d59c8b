"""The scheduler's checks on a submitted spec, as a table: what is refused, and the message."""

from __future__ import annotations

import pytest

from sortie.proto import messages as m
from sortie.scheduler.validate import check_manifest, check_secrets, check_spec, unstored_file
from tests.builders import spec

TARGETS = {"local"}


def _env(**python: list[str]) -> m.Environment:
    """A system-managed Python environment with these package lists."""
    return m.Environment(python=m.PythonEnvironment(user_managed=False, **python))  # type: ignore[arg-type]


# (what, spec fields, None if accepted else a piece of the message)
CASES: list[tuple[str, dict[str, object], str | None]] = [
    ("plain spec", {}, None),
    ("arguments", {"arguments": ["--lr", "0.1", ""]}, None),
    ("NUL in an argument", {"arguments": ["ok", "a\x00b"]}, "script argument 2 ('a\\x00b')"),
    ("NUL alone", {"arguments": ["\x00"]}, "contains a NUL byte"),
    ("env var", {"env_vars": {"A_1": "x y"}}, None),
    ("NUL in an env value", {"env_vars": {"A": "a\x00b"}}, "environment variable A contains a NUL"),
    ("NUL in an env name", {"env_vars": {"A\x00B": "x"}}, "name 'A\\x00B' is not valid"),
    ("newline after a name", {"env_vars": {"A\n": "x"}}, "name 'A\\n' is not valid"),
    ("reserved name", {"env_vars": {"SORTIE_X": "1"}}, "SORTIE_* names are reserved"),
    ("NUL in a secret name", {"secret_env_names": ["T\x00"]}, "name 'T\\x00' is not valid"),
    ("negative snapshot size", {"snapshot_bytes": -1}, "must not be negative"),
    ("negative file count", {"snapshot_files": -5}, "must not be negative"),
    ("no process per node", {"processes_per_node": 0}, "processes_per_node must be at least 1"),
    ("NUL in the script", {"script": "a\x00.py"}, "'a\\x00.py' contains a NUL"),
    ("pip packages", {"environment": _env(pip=["six", "numpy>=1"])}, None),
    ("NUL in a pip package", {"environment": _env(pip=["six", "np\x00"])}, "pip package 2"),
    ("NUL in a conda package", {"environment": _env(conda=["x\x00"])}, "conda package 1"),
    ("NUL in a conda channel", {"environment": _env(channels=["c\x00"])}, "conda channel 1"),
    (
        "NUL in the interpreter",
        {"environment": m.Environment(python=m.PythonEnvironment(interpreter="/py\x00"))},
        "the Python interpreter ('/py\\x00') contains a NUL byte",
    ),
    (
        "NUL in the image",
        {"environment": m.Environment(docker=m.DockerSection(enabled=True, base_image="b\x00"))},
        "the container image",
    ),
    (
        "NUL in a container option",
        {"environment": m.Environment(docker=m.DockerSection(arguments=["--ipc=host\x00"]))},
        "container option 1",
    ),
    ("NUL in the GPU type", {"resources": m.Resources(gpu_type="H100\x00")}, "the GPU type"),
    ("NUL in a constraint", {"constraints": {"zone": "a\x00"}}, "constraint 'zone'"),
    ("NUL in a constraint label", {"constraints": {"z\x00": "a"}}, "a constraint's label"),
]


@pytest.mark.parametrize(("fields", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_spec(fields: dict[str, object], expected: str | None) -> None:
    problem = check_spec(spec(**fields), TARGETS)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.code == "bad_request"
        assert expected in problem.message, problem.message


SECRET_CASES: list[tuple[str, dict[str, str], str | None]] = [
    ("a value", {"TOKEN": "s3cret"}, None),
    ("NUL in the value", {"TOKEN": "s3\x00cret"}, "secret environment variable TOKEN contains"),
]


@pytest.mark.parametrize(
    ("values", "expected"), [c[1:] for c in SECRET_CASES], ids=[c[0] for c in SECRET_CASES]
)
def test_check_secrets(values: dict[str, str], expected: str | None) -> None:
    problem = check_secrets(spec(secret_env_names=["TOKEN"]), m.SecretEnv(values=values))
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem.message
        assert "s3" not in problem.message  # the value is never quoted


def _manifest(*sizes: tuple[str, int]) -> m.Manifest:
    return m.Manifest(
        files=[
            m.FileEntry(path=f"f{i}", size=size, mode=0o644, sha256=sha)
            for i, (sha, size) in enumerate(sizes)
        ]
    )


A, B = "a" * 64, "b" * 64
MANIFEST_CASES: list[tuple[str, m.Manifest, dict[str, int | None], str | None]] = [
    ("within the limit", _manifest((A, 600), (B, 400)), {A: 600, B: 400}, None),
    ("at the limit", _manifest((A, 1000)), {}, None),
    ("over the limit", _manifest((A, 600), (B, 401)), {}, "holds 1,001 bytes, more than"),
    ("1e12 claimed", _manifest((A, 10**12)), {A: 1}, "more than this scheduler's limit of 1,000"),
    ("negative hides a lie", _manifest((A, 10**12), (B, -(10**12))), {}, "negative file size"),
    (
        "size not the blob's",
        _manifest((A, 5)),
        {A: 1},
        "says 'f0' holds 5 bytes, but its blob holds 1",
    ),
    (
        "blob not stored: unstored_file says so",
        _manifest((A, 5)),
        {A: None},
        None,
    ),
    ("not looked up: left to the agent", _manifest((A, 5)), {}, None),
]


@pytest.mark.parametrize(
    ("manifest", "stored", "expected"),
    [c[1:] for c in MANIFEST_CASES],
    ids=[c[0] for c in MANIFEST_CASES],
)
def test_check_manifest(
    manifest: m.Manifest, stored: dict[str, int | None], expected: str | None
) -> None:
    problem = check_manifest(manifest, 1000, stored)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem, problem


def test_unstored_file_names_the_first_file_looked_up_and_missing() -> None:
    manifest = _manifest((A, 5), (B, 6))
    assert unstored_file(manifest, {A: 5, B: 6}) is None
    assert unstored_file(manifest, {}) is None  # not looked up: left to the agent
    why = unstored_file(manifest, {A: 5, B: None})
    assert why is not None and "the blob of 'f1' (bbbbbbbbbbbb) is not in the store" in why
