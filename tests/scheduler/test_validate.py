"""The scheduler's checks on a submitted spec, as a table: what is refused, and the message."""

from __future__ import annotations

import pytest

from sortie.proto import messages as m
from sortie.scheduler.validate import check_secrets, check_spec
from tests.builders import spec

TARGETS = {"local"}

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
