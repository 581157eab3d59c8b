"""``CondaDependencies``: a conda-style environment description built in code.

The hosted platform's SDK v1 shape (``CondaDependencies.create(pip_packages=...,
conda_packages=..., python_version=...)``, ``add_pip_package``, ``serialize_to_string``,
``save``). It is data only: ``rc.environment.python.conda_dependencies = cd`` hands it to
``PythonSection.to_spec``, which reads it with the same parser as a conda YAML file
(``envspec.from_conda_mapping``), so an object and a file mean the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from sortie.client import envspec
from sortie.proto.messages import PythonEnvironment


class CondaDependencies:
    """Conda packages, pip packages, channels and a Python version, as in a conda YAML."""

    def __init__(
        self,
        conda_dependencies_file_path: str | Path | None = None,
        _underlying_structure: dict[str, Any] | None = None,
    ) -> None:
        self.name = "project_environment"
        self._python: str | None = None
        self._conda: list[str] = []
        self._pip: list[str] = []
        self._channels: list[str] = []
        self.pip_indexurl: str | None = None
        self.pin_sdk_version = True  # recorded; Sortie's run API comes with the agent
        self._source = Path("conda_dependencies")  # names it in errors; `-r` is relative to it
        if conda_dependencies_file_path is not None:
            self._source = Path(conda_dependencies_file_path)
            self._read(envspec.load_conda_yaml(self._source))
        elif _underlying_structure is not None:
            self._read(_underlying_structure)

    @staticmethod
    def create(
        pip_indexurl: str | None = None,
        pip_packages: Iterable[str] | None = None,
        conda_packages: Iterable[str] | None = None,
        python_version: str | None = None,
        pin_sdk_version: bool = True,
    ) -> CondaDependencies:
        """A description with these packages (and this Python, e.g. ``"3.11"``; by default
        the agent's). The hosted SDK v1's signature; ``pip_indexurl`` is refused (indexes
        are the agent's setting)."""
        cd = CondaDependencies()
        cd._python = python_version
        cd.pin_sdk_version = pin_sdk_version
        if pip_indexurl is not None:
            cd.set_pip_option(f"--index-url {pip_indexurl}")
        for p in conda_packages or ():
            cd.add_conda_package(p)
        for p in pip_packages or ():
            cd.add_pip_package(p)
        return cd

    def _read(self, doc: dict[str, Any]) -> None:
        self.name = str(doc.get("name") or self.name)
        self._channels = [str(c) for c in doc.get("channels") or []]
        for dep in doc.get("dependencies") or []:
            if isinstance(dep, dict):
                self._pip.extend(str(p) for p in dep.get("pip") or [])
            elif str(dep).split("=")[0].strip().lower() == "python":
                self._python = str(dep).partition("=")[2].lstrip("=") or None
            elif str(dep).strip().lower() != "pip":
                self._conda.append(str(dep))

    # --- editing ------------------------------------------------------------------------------

    def add_conda_package(self, conda_package: str) -> None:
        if conda_package not in self._conda:
            self._conda.append(conda_package)

    def add_pip_package(self, pip_package: str) -> None:
        if pip_package not in self._pip:
            self._pip.append(pip_package)

    def add_channel(self, channel: str) -> None:
        if channel not in self._channels:
            self._channels.append(channel)

    def remove_conda_package(self, conda_package: str) -> None:
        self._conda = [p for p in self._conda if p != conda_package]

    def remove_pip_package(self, pip_package: str) -> None:
        self._pip = [p for p in self._pip if p != pip_package]

    def remove_channel(self, channel: str) -> None:
        self._channels = [c for c in self._channels if c != channel]

    def set_python_version(self, version: str) -> None:
        self._python = version

    def set_pip_option(self, pip_option: str) -> None:
        """Refused here, as in a requirements file: package indexes are set up on the agent."""
        raise envspec.EnvSpecError(
            f"pip option {pip_option!r} is not supported: package indexes are set up on the "
            "agent (its uv configuration), not per run"
        )

    # --- reading ------------------------------------------------------------------------------

    @property
    def conda_packages(self) -> Iterator[str]:
        return iter(self._conda)

    @property
    def pip_packages(self) -> Iterator[str]:
        return iter(self._pip)

    @property
    def conda_channels(self) -> Iterator[str]:
        return iter(self._channels)

    @property
    def python_version(self) -> str | None:
        return self._python

    def is_empty(self) -> bool:
        return not (self._python or self._conda or self._pip)

    def as_mapping(self) -> dict[str, Any]:
        """The conda environment YAML document this describes."""
        deps: list[Any] = [f"python={self._python}"] if self._python else []
        deps += self._conda
        if self._pip:
            deps += ["pip", {"pip": list(self._pip)}]
        doc: dict[str, Any] = {"name": self.name, "dependencies": deps}
        if self._channels:
            doc["channels"] = list(self._channels)
        return doc

    def serialize_to_string(self) -> str:
        return yaml.safe_dump(self.as_mapping(), sort_keys=False)

    def save(self, path: str | Path | None = None) -> str:
        """Write the YAML to ``path`` (default ``conda_dependencies.yml``); returns the path."""
        target = Path(path or "conda_dependencies.yml")
        target.write_text(self.serialize_to_string(), encoding="utf-8")
        return str(target)

    def save_to_file(self, base_directory: str | Path, conda_file_path: str | None = None) -> str:
        return self.save(Path(base_directory) / (conda_file_path or "conda_dependencies.yml"))

    def to_spec(self) -> PythonEnvironment:
        """The system-managed environment this describes (``EnvSpecError`` when it cannot
        be used, naming the entry)."""
        return envspec.from_conda_mapping(self.as_mapping(), self._source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CondaDependencies):
            return NotImplemented
        return self.as_mapping() == other.as_mapping()

    __hash__ = None  # type: ignore[assignment]  # mutable: equal by content, so not hashable

    def __repr__(self) -> str:
        return f"CondaDependencies({self.as_mapping()!r})"
