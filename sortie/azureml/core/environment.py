"""``azureml.core.environment``: ``Environment``, a named run environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sortie.azureml.core.runconfig import v1_environment
from sortie.azureml.exceptions import UserErrorException
from sortie.client import envspec
from sortie.client.conda import CondaDependencies
from sortie.client.runconfig import DockerSettings, EnvironmentSection, PythonSection

DockerSection = DockerSettings  # v1's name for ``environment.docker``

__all__ = ["DockerSection", "Environment", "PythonSection"]


class Environment(EnvironmentSection):
    """v1's ``Environment(name)``: ``python`` (``user_managed_dependencies``,
    ``interpreter_path``, ``conda_dependencies``), ``docker`` (``enabled``, ``base_image``)
    and ``environment_variables``. By v1's default Sortie builds it from its dependencies."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name=name)
        v1_environment(self)
        self._options = kwargs  # recorded (v1's private options)

    @staticmethod
    def from_conda_specification(name: str, file_path: str | Path) -> Environment:
        """An environment built from a conda-style YAML (read now: a bad file is refused
        here, naming the entry)."""
        path = Path(file_path).resolve()
        envspec.from_conda_file(path)
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(path)
        return env

    @staticmethod
    def from_pip_requirements(
        name: str, file_path: str | Path, pip_version: str | None = None
    ) -> Environment:
        """An environment built from a pip requirements file (read now, ``-r`` followed)."""
        path = Path(file_path).resolve()
        envspec.from_requirements(path)
        env = Environment(name)
        env.python.requirements_file = str(path)
        env._pip_version = pip_version  # recorded: uv installs the requirements
        return env

    @staticmethod
    def get(workspace: Any, name: str, version: str | None = None, label: str | None = None) -> Any:
        """Refused: Sortie keeps no environment registry (each run stores its own)."""
        raise UserErrorException(
            f"Environment.get({name!r}): Sortie has no registered or curated environments; "
            "build it in code (Environment(name), Environment.from_conda_specification or "
            "from_pip_requirements) and pass it to ScriptRunConfig(environment=...)"
        )

    def register(self, workspace: Any) -> Environment:
        """Kept for v1 scripts: an environment is stored with each run that uses it."""
        return self
