"""A v1 Docker flow with `sortie.azureml` imports: ``environment.docker.enabled`` with a base
image runs the script in a container of the real engine (Podman's API)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sortie.azureml.core import Environment, Experiment, ScriptRunConfig, Workspace
from tests.containers.conftest import Engine
from tests.containers.images import build_python_image
from tests.containers.test_e2e_containers import boxed  # noqa: F401  # the fixture: `sortie up` with the engine
from tests.e2e.conftest import Installation


def test_v1_docker_environment_runs_in_a_container(
    boxed: Installation,  # noqa: F811  # the fixture imported above
    podman: Engine,
    tmp_path: Path,
) -> None:
    image = build_python_image(podman)
    (tmp_path / "train.py").write_text(
        textwrap.dedent("""
        import os
        from sortie import Run
        print("in container:", os.path.exists("/run/.containerenv"), flush=True)
        Run.get_context().log("accuracy", 0.5)
    """)
    )
    env = Environment("docker-env")
    env.python.user_managed_dependencies = True
    env.docker.enabled = True
    env.docker.base_image = image
    config = Path(boxed.env["SORTIE_PROFILE"]).with_name("config.json")
    with Workspace.from_config(path=config) as ws:
        run = Experiment(ws, "v1-docker").submit(
            ScriptRunConfig(source_directory=str(tmp_path), script="train.py", environment=env)
        )
        details = run.wait_for_completion()
        assert details["docker"]["base_image"] == image
        assert run.get_metrics()["accuracy"] == 0.5
