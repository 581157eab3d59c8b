"""The pure parts of a pipeline step's data on its agent: which specs are refused, where the
data lies as the run sees it, what the sandbox and a container are given, and the manifest
an output directory becomes."""

from __future__ import annotations

import os
from pathlib import Path, PurePath, PurePosixPath

import pytest

from sortie.agents import isolation as iso
from sortie.agents.data_upload import data_manifest, refusals
from sortie.agents.executors.container import C_DATA, data_mounts
from sortie.agents.outputs import Entry, scan_dir
from sortie.agents.pipeline_data import data_dir, data_paths, data_problem, run_arguments
from sortie.proto import messages as m
from sortie.proto.pipelines import data_token


def _spec(**kw: object) -> m.RunSpec:
    return m.RunSpec(experiment="e", script="s.py", snapshot_id="0" * 64, **kw)


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({}, None),
        ({"data_inputs": {"a": "x"}, "data_outputs": ["b"]}, None),
        ({"arguments": [f"--in={data_token('a')}"], "data_inputs": {"a": "x"}}, None),
        ({"data_outputs": ["../b"]}, "'../b' are not PipelineData names"),
        ({"data_inputs": {"a/b": "x"}}, "'a/b' are not PipelineData names"),
        ({"data_inputs": {"a": "x"}, "data_outputs": ["a"]}, "data 'a' is named twice"),
        ({"data_outputs": ["b", "b"]}, "data 'b' is named twice"),
        ({"arguments": [data_token("z")]}, "name data 'z', which the step neither reads"),
    ],
)
def test_data_problem(kw: dict[str, object], problem: str | None) -> None:
    got = data_problem(_spec(**kw))
    assert got == problem if problem is None else (got is not None and problem in got)


def test_arguments_get_the_paths_as_the_run_sees_them() -> None:
    spec = _spec(
        arguments=["--in", data_token("raw"), f"--out={data_token('model')}", "plain"],
        data_inputs={"raw": "x"},
        data_outputs=["model"],
    )
    host = data_dir(Path("/d/agent/runs/r1/1"))
    assert host == Path("/d/agent/runs/r1/1.data")
    assert run_arguments(spec, host) == [
        "--in",
        "/d/agent/runs/r1/1.data/in/raw",
        "--out=/d/agent/runs/r1/1.data/out/model",
        "plain",
    ]
    assert data_paths(C_DATA, spec) == {
        "raw": "/sortie/data/in/raw",
        "model": "/sortie/data/out/model",
    }
    assert run_arguments(_spec(arguments=["a", "{x}"]), None) == ["a", "{x}"]


def test_the_sandbox_reads_inputs_and_writes_outputs_only() -> None:
    paths = iso.SandboxPaths(
        workdir=PurePath("/r/1"),
        run_dir=PurePath("/r"),
        scratch=PurePath("/r/1.tmp"),
        metrics_file=PurePath("/r/1.metrics"),
        runtime_dir=PurePath("/rt"),
        interpreter_roots=(),
        data_in=PurePath("/r/1.data/in"),
        data_out=PurePath("/r/1.data/out"),
    )
    rules = {r.path: r.rights for r in iso.sandbox_rules(paths)}
    assert rules["/r/1.data/in"] == iso.READ
    assert rules["/r/1.data/out"] == iso.WRITE_TREE


def test_a_container_mounts_inputs_read_only(tmp_path: Path) -> None:
    assert data_mounts(None) == []
    mounts = {mnt.target: (mnt.source, mnt.read_only) for mnt in data_mounts(tmp_path)}
    assert mounts == {
        str(PurePosixPath("/sortie/data/in")): (tmp_path / "in", True),
        str(PurePosixPath("/sortie/data/out")): (tmp_path / "out", False),
    }


def test_an_output_directory_becomes_a_manifest_by_path(tmp_path: Path) -> None:
    out = tmp_path / "d"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "z.txt").write_text("z")
    (out / "a.sh").write_text("a")
    (out / "a.sh").chmod(0o755)
    (out / "same").symlink_to("a.sh")
    (tmp_path / "outside").write_text("secret")
    (out / "leak").symlink_to(tmp_path / "outside")
    os.mkfifo(out / "pipe")
    scan = scan_dir(out, "d")
    assert scan.leaving == ["d/leak (a link leaving d/)"]
    assert len(scan.refused) == 1 and "d/pipe" in scan.refused[0]
    manifest = data_manifest(scan.found)
    assert [(f.path, f.size, f.mode) for f in manifest.files] == [
        ("a.sh", 1, 0o755),
        ("same", 1, 0o755),
        ("sub/z.txt", 1, 0o644 & ~_umask()),
    ]
    why = refusals("d", scan.refused, scan.found)
    assert why is not None and why.startswith("output data 'd' cannot be stored: d/pipe (")
    assert refusals("d", [], scan.found) is None
    bad = Entry(rel="x\\y", real="x\\y", size=0, sha256="0" * 64, mode=0o644)
    assert "backslash" in (refusals("d", [], [bad]) or "")
    assert data_manifest([]) == m.Manifest(files=[])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
