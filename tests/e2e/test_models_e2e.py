"""The model registry and a submitted run's files, metrics and logs, against a real `sortie up`:
through the SDK (Azure ML v1's names) and the `sortie model` CLI as a child process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie import Experiment, ScriptRunConfig, Workspace
from sortie.bus.blobs import list_blobs
from sortie.client.client import ClientError
from sortie.client.models import Model, WebserviceException
from sortie.client.sdk import SubmittedRun
from tests.e2e.conftest import Installation

MODEL_BYTES = b"pretend these are weights\n" * 100
TRAIN = f"""
from pathlib import Path
from sortie import Run
run = Run.get_context()
out = Path("outputs")
(out / "extra").mkdir(parents=True, exist_ok=True)
(out / "model.pkl").write_bytes({MODEL_BYTES!r})
(out / "extra" / "info.txt").write_text("about the model\\n")
for i in range(3):
    run.log("loss", 1.0 / (i + 1))
run.log("accuracy", 0.9)
print("training done")
"""


@pytest.fixture
def ws(installation: Installation, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    monkeypatch.setenv("SORTIE_PROFILE", installation.env["SORTIE_PROFILE"])
    monkeypatch.delenv("SORTIE_URL", raising=False)
    w = Workspace.connect()
    yield w
    w.close()


@pytest.fixture(scope="module")
def run_id(installation: Installation, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One completed run that wrote outputs/model.pkl and outputs/extra/info.txt."""
    src = tmp_path_factory.mktemp("train")
    (src / "train.py").write_text(TRAIN)
    w = Workspace.connect(installation.url, creds=installation.client_creds)
    try:
        run = Experiment(w, "models-e2e").submit(
            ScriptRunConfig(source_directory=src, script="train.py")
        )
        run.wait_for_completion()
        return run.id
    finally:
        w.close()


def _stored(ws: Workspace) -> tuple[int, int]:
    """How many blobs the store holds, and their bytes."""
    infos = ws._run(list_blobs(ws._client.bus.blobs))
    return len(infos), sum(i.size or 0 for i in infos)


def test_a_model_registered_twice_from_a_run_stores_no_new_bytes(
    ws: Workspace, run_id: str, tmp_path: Path
) -> None:
    run = ws.get_run(run_id)
    before = _stored(ws)
    first = run.register_model("digits-e2e", model_path="outputs/model.pkl", tags={"area": "cv"})
    second = run.register_model(
        "digits-e2e", "outputs/model.pkl", tags={"stage": "prod"}, description="the good one"
    )
    assert _stored(ws) == before  # the run's artifact blobs are the model's files
    assert (first.version, second.version) == (1, 2)
    assert second.id == "digits-e2e:2"
    assert (second.run_id, second.experiment_name) == (run_id, "models-e2e")
    assert second.record.snapshot_id == run._record().spec.snapshot_id

    assert Model(ws, "digits-e2e").version == 2
    assert Model(ws, "digits-e2e", version=1).tags == {"area": "cv"}
    assert Model(ws, id="digits-e2e:1").version == 1
    assert Model(ws, "digits-e2e").description == "the good one"

    assert [mo.version for mo in Model.list(ws, name="digits-e2e")] == [2, 1]
    assert [mo.version for mo in Model.list(ws, tags=[["stage", "prod"]])] == [2]
    assert [mo.id for mo in Model.list(ws, tags=["area"])] == ["digits-e2e:1"]
    assert [mo.version for mo in Model.list(ws, name="digits-e2e", latest=True)] == [2]

    path = Model(ws, "digits-e2e").download(target_dir=str(tmp_path / "dl"))
    assert path == str(tmp_path / "dl" / "model.pkl")
    assert Path(path).read_bytes() == MODEL_BYTES
    with pytest.raises(WebserviceException, match="File already exists"):
        Model(ws, "digits-e2e").download(target_dir=str(tmp_path / "dl"))
    assert Model(ws, "digits-e2e", version=1).download(tmp_path / "dl", exist_ok=True) == path


def test_a_local_folder_registered_twice_uploads_its_bytes_once(
    ws: Workspace, tmp_path: Path
) -> None:
    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"local weights " * 1000)
    (folder / "sub" / "vocab.txt").write_text("a\nb\n")
    first = Model.register(ws, model_path=str(folder), model_name="local-e2e", tags={"k": "v"})
    after_first = _stored(ws)
    second = Model.register(ws, model_path=folder, model_name="local-e2e")
    assert _stored(ws) == after_first
    assert (first.version, second.version) == (1, 2)
    assert first.run_id is None

    out = Path(second.download(tmp_path / "out"))
    assert out == tmp_path / "out" / "bundle"
    assert (out / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()
    assert (out / "sub" / "vocab.txt").read_text() == "a\nb\n"


def test_bad_names_and_paths_are_refused_saying_what_to_do(
    ws: Workspace, run_id: str, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(WebserviceException, match="model name 'bad name' is not valid: use"):
        Model.register(ws, model_path=str(tmp_path / "m.bin"), model_name="bad name")
    with pytest.raises(WebserviceException, match=r"model path .*nope does not exist"):
        Model.register(ws, model_path=str(tmp_path / "nope"), model_name="refused-e2e")
    with pytest.raises(WebserviceException, match=r"model folder .*empty is empty"):
        Model.register(ws, model_path=str(tmp_path / "empty"), model_name="refused-e2e")
    with pytest.raises(WebserviceException, match=r"has no artifact at 'outputs/nope\.pkl'"):
        ws.get_run(run_id).register_model("refused-e2e", model_path="outputs/nope.pkl")
    with pytest.raises(WebserviceException, match="ModelNotFound: no model named 'never-e2e'"):
        Model(ws, "never-e2e")
    with pytest.raises(WebserviceException, match="has no version 9"):
        Model(ws, "refused-e2e", version=9)
    assert Model.list(ws, name="refused-e2e") == []


def test_a_submitted_runs_files_metrics_and_logs(
    ws: Workspace, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run: SubmittedRun = ws.get_run(run_id)
    assert sorted(run.get_file_names()) == ["outputs/extra/info.txt", "outputs/model.pkl"]

    got = run.download_file("outputs/model.pkl", tmp_path / "m.pkl")
    assert got == tmp_path / "m.pkl" and got.read_bytes() == MODEL_BYTES
    (tmp_path / "into").mkdir()
    assert (
        run.download_file("outputs/model.pkl", tmp_path / "into") == tmp_path / "into" / "model.pkl"
    )
    monkeypatch.chdir(tmp_path / "into")
    assert (
        run.download_file("outputs/extra/info.txt").resolve()
        == (tmp_path / "into" / "info.txt").resolve()
    )
    with pytest.raises(ClientError, match="has no file 'outputs/none'"):
        run.download_file("outputs/none")

    kept = run.download_files(prefix="outputs/extra", output_directory=tmp_path / "a")
    assert kept == [(tmp_path / "a" / "outputs" / "extra" / "info.txt").resolve()]
    flat = run.download_files(
        prefix="outputs/extra", output_directory=tmp_path / "b", append_prefix=False
    )
    assert flat == [(tmp_path / "b" / "info.txt").resolve()]
    every = run.download_files(output_directory=tmp_path / "c")
    assert len(every) == 2

    assert run.get_metrics(name="loss") == {"loss": [1.0, 0.5, 1 / 3]}
    assert run.get_metrics(name="nope") == {}
    assert run.get_metrics()["accuracy"] == 0.9

    details = run.get_details_with_logs()
    assert details["state"] == "Completed"
    assert "training done" in details["logFiles"]["user_logs/std_log.txt"]
    assert run.get_portal_url() is None  # no dashboard named in the profile


def test_the_model_cli(installation: Installation, run_id: str, tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"cli weights")
    out = installation.json("model", "register", "cli-e2e", str(weights), "--tag", "team=ml")
    assert (out["id"], out["files"][0]["path"], out["tags"]) == (
        "cli-e2e:1",
        "w.bin",
        {"team": "ml"},
    )
    from_run = installation.cli(
        "model",
        "register",
        "cli-e2e",
        "outputs",
        "--run",
        run_id,
        "--description",
        "all",
        check=True,
    )
    assert "model cli-e2e:2" in from_run.stdout and f"run          {run_id}" in from_run.stdout

    listed = installation.json("model", "list", "--name", "cli-e2e")
    assert [(x["version"], x["tags"]) for x in listed] == [(2, {}), (1, {"team": "ml"})]
    tagged = installation.json("model", "list", "--tag", "team=ml")
    assert [x["id"] for x in tagged] == ["cli-e2e:1"]
    text = installation.cli("model", "list", check=True).stdout
    assert "cli-e2e" in text and "NAME" in text

    shown = installation.json("model", "show", "cli-e2e")
    assert shown["version"] == 2 and shown["experiment_name"] == "models-e2e"
    assert sorted(f["path"] for f in shown["files"]) == [
        "outputs/extra/info.txt",
        "outputs/model.pkl",
    ]
    assert installation.json("model", "show", "cli-e2e:1")["version"] == 1

    dest = tmp_path / "dest"
    got = installation.cli("model", "download", "cli-e2e:2", str(dest), check=True)
    assert got.stdout.strip() == str(dest / "outputs")
    assert (dest / "outputs" / "model.pkl").read_bytes() == MODEL_BYTES
    again = installation.cli("model", "download", "cli-e2e:2", str(dest))
    assert again.returncode == 2 and "File already exists" in again.stderr
    assert "Traceback" not in again.stderr

    bad = installation.cli("model", "register", "no/slash", str(weights))
    assert bad.returncode == 2
    assert "model name 'no/slash' is not valid" in bad.stderr and "Traceback" not in bad.stderr
    missing = installation.cli("model", "show", "cli-e2e:7")
    assert missing.returncode == 2 and "has no version 7" in missing.stderr
    no_artifact = installation.cli("model", "register", "cli-e2e", "outputs/x", "--run", run_id)
    assert no_artifact.returncode == 2 and "has no artifact at 'outputs/x'" in no_artifact.stderr
    assert [x["version"] for x in installation.json("model", "list", "--name", "cli-e2e")] == [2, 1]
