"""The CLI's display and filter rules (pure): rounded floats in text, `run list`'s filters
and `--since`, and the one table of exit codes that README repeats."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pytest

from sortie.cli.main import _parser
from sortie.cli.output import EXIT_CODES, number
from sortie.cli.run_list import select
from sortie.cli.runs import since
from sortie.proto.run_index import RunQuery
from sortie.proto.states import RunState
from tests import builders as b
from tests.e2e.conftest import SORTIE


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.1 + 0.05, "0.15"),
        (0.1 + 0.2, "0.3"),
        (0.97123456789, "0.971235"),
        (3.0, "3"),
        (1e-9, "1e-09"),
        (12345678.0, "12345678"),
        (7, "7"),
        (True, "True"),
        ("text", "text"),
    ],
)
def test_text_rounds_floats(value: object, shown: str) -> None:
    assert number(value) == shown


def test_since_takes_a_duration_or_an_iso_time() -> None:
    assert since("90m", now=10_000.0) == 10_000.0 - 5400
    assert since("2d", now=200_000.0) == 200_000.0 - 2 * 86400
    assert since("1970-01-01T00:01:00Z") == 60.0
    assert since("1970-01-01T00:01:00") == 60.0  # no zone: UTC
    with pytest.raises(argparse.ArgumentTypeError, match="neither a duration"):
        since("yesterday")


def test_run_list_filters_all_hold_and_keep_the_order() -> None:
    runs = [
        b.record("c", RunState.FAILED, created_at=30.0, spec=b.spec(target="gpu")),
        b.record("b", RunState.COMPLETED, created_at=20.0),
        b.record("a", RunState.COMPLETED, created_at=10.0, spec=b.spec(target="gpu")),
    ]

    def kept(
        states: list[str] | None = None,
        target: str | None = None,
        created_since: float | None = None,
        most: int | None = None,
    ) -> list[str]:
        query = RunQuery(
            states=[RunState(s) for s in states or ()], target=target, created_since=created_since
        )
        chosen = select(runs, query, most)
        return [r.run_id for r in chosen]

    assert kept() == ["c", "b", "a"]
    assert kept(states=["Completed"]) == ["b", "a"]
    assert kept(states=["Completed", "Failed"], target="gpu") == ["c", "a"]
    assert kept(created_since=20.0) == ["c", "b"]
    assert kept(most=1, states=["Completed"]) == ["b"]


def test_pip_takes_one_package_and_leaves_the_source_dir() -> None:
    args = _parser().parse_args(
        ["run", "submit", "--pip", "scikit-learn", "src", "--script", "t.py", "--pip", "six"]
    )
    assert (args.pip, args.source_dir) == (["scikit-learn", "six"], Path("src"))


def test_readme_lists_the_exit_codes() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = re.findall(r"^\| (\d+) \| ", readme, flags=re.MULTILINE)
    assert [int(code) for code in table] == sorted(EXIT_CODES)


def test_a_refused_command_line_is_code_and_message_in_json(tmp_path: Path) -> None:
    def sortie(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SORTIE, *argv], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
        )

    as_json = sortie("run", "list", "--state", "Done", "-o", "json")
    assert as_json.returncode == 2 and as_json.stdout == ""
    error = json.loads(as_json.stderr)
    assert error["code"] == "bad_input"
    assert "argument --state: invalid choice: 'Done'" in error["message"]
    as_text = sortie("run", "list", "--state", "Done")
    assert as_text.returncode == 2 and as_text.stderr.startswith("usage: sortie run list")
    assert "sortie run list: error: argument --state: invalid choice" in as_text.stderr
