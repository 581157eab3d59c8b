"""The model registry's pure decisions (scheduler.model_versions): names, which files a
registration names, and which version it gets."""

from __future__ import annotations

import pytest

from sortie.proto import messages as m
from sortie.proto.model_names import check_name
from sortie.proto.states import RunState
from sortie.scheduler.model_versions import plan_register, run_files, version_of

SHA_A = "a" * 64
SHA_B = "b" * 64


def _run(*paths: str) -> m.RunRecord:
    return m.RunRecord(
        run_id="train_1_ab",
        spec=m.RunSpec(
            experiment="digits",
            script="train.py",
            snapshot_id="c" * 64,
            git=m.GitInfo(commit="deadbeef"),
        ),
        state=RunState.COMPLETED,
        attempt=1,
        created_at=0.0,
        artifacts=[m.Artifact(path=p, size=3, sha256=SHA_A) for p in paths],
    )


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("digits", True),
        ("sk-learn_model.v2", True),
        ("9lives", True),
        ("", False),
        ("-lead", False),
        (".hidden", False),
        ("has/slash", False),
        ("has space", False),
        ("x" * 255, True),
        ("x" * 256, False),
    ],
)
def test_model_names_follow_the_v1_rule(name: str, ok: bool) -> None:
    why = check_name(name)
    assert (why is None) == ok
    if not ok:
        assert "letters, digits, '-', '_' or '.'" in (why or "")


def test_versions_count_up_per_name() -> None:
    req = m.ModelRegister(name="digits", files=[m.ModelFile(path="m.pkl", sha256=SHA_A, size=1)])
    first = plan_register(req, None, [], set(), 10.0)
    assert isinstance(first, m.ModelRecord) and first.version == 1
    third = plan_register(req, None, [1, 2], set(), 11.0)
    assert isinstance(third, m.ModelRecord) and third.version == 3
    assert version_of("digits/2", "digits") == 2
    assert version_of("digits.v2/2", "digits") is None


def test_a_run_file_or_folder_keeps_its_last_part_as_the_root() -> None:
    run = _run("outputs/model.pkl", "outputs/meta/info.json", "outputs/model.pkl.bak")
    single = run_files(run, "outputs/model.pkl")
    assert isinstance(single, list) and [f.path for f in single] == ["model.pkl"]
    folder = run_files(run, "outputs")
    assert isinstance(folder, list)
    assert [f.path for f in folder] == [
        "outputs/meta/info.json",
        "outputs/model.pkl",
        "outputs/model.pkl.bak",
    ]
    assert {f.sha256 for f in folder} == {SHA_A}  # the run's own blobs


def test_registering_from_a_run_records_its_lineage() -> None:
    req = m.ModelRegister(name="digits", run_id="train_1_ab", run_path="outputs/model.pkl")
    rec = plan_register(req, _run("outputs/model.pkl"), [], set(), 5.0)
    assert isinstance(rec, m.ModelRecord)
    assert (rec.run_id, rec.experiment, rec.snapshot_id, rec.git_commit) == (
        "train_1_ab",
        "digits",
        "c" * 64,
        "deadbeef",
    )


@pytest.mark.parametrize(
    ("request_", "run", "missing", "code", "says"),
    [
        (m.ModelRegister(name="bad name"), None, set(), "bad_request", "is not valid"),
        (
            m.ModelRegister(name="d", run_id="nope", run_path="outputs/m"),
            None,
            set(),
            "not_found",
            "no run 'nope'",
        ),
        (
            m.ModelRegister(name="d", run_id="train_1_ab", run_path="outputs/nothing.pkl"),
            _run("outputs/model.pkl"),
            set(),
            "not_found",
            "has no artifact at 'outputs/nothing.pkl' (its artifacts: outputs/model.pkl)",
        ),
        (
            m.ModelRegister(name="d", run_id="train_1_ab", run_path="../etc"),
            _run("outputs/model.pkl"),
            set(),
            "not_found",
            "model path refused",
        ),
        (m.ModelRegister(name="d"), None, set(), "bad_request", "at least one file"),
        (
            m.ModelRegister(name="d", files=[m.ModelFile(path="m", sha256=SHA_B, size=1)]),
            None,
            {SHA_B},
            "bad_request",
            "is not stored; upload it first",
        ),
        (
            m.ModelRegister(name="d", files=[m.ModelFile(path="/abs", sha256=SHA_A, size=1)]),
            None,
            set(),
            "bad_request",
            "is absolute",
        ),
    ],
)
def test_bad_registrations_are_refused_saying_why(
    request_: m.ModelRegister,
    run: m.RunRecord | None,
    missing: set[str],
    code: str,
    says: str,
) -> None:
    reply = plan_register(request_, run, [1], missing, 0.0)
    assert isinstance(reply, m.ErrorReply)
    assert reply.code == code
    assert says in reply.message
