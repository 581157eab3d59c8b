"""Registered models in the SDK, shaped like Azure ML v1's ``azureml.core.model.Model``.

    model = Model.register(ws, model_path="outputs/model.pkl", model_name="digits",
                           tags={"area": "vision"})
    model = run.register_model("digits", model_path="outputs/model.pkl")  # no re-upload
    Model(ws, "digits").version               # the newest version
    Model(ws, "digits", version=1).download(target_dir="models", exist_ok=True)
    Model.list(ws, name="digits", tags=[["area", "vision"]])

A model that does not exist raises :class:`WebserviceException`, as v1 does. Arguments that
mean nothing here (datasets, sample datasets, resource configuration, ``expand``) are
accepted and ignored.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sortie.client import model_store
from sortie.client.model_store import TagFilter, WebserviceException
from sortie.proto import messages as m

if TYPE_CHECKING:
    from sortie.client.sdk import Workspace

__all__ = ["Model", "WebserviceException"]


class Model:
    """One version of a registered model (v1: ``Model(workspace, name=None, id=None, ...)``):
    the newest version of ``name`` unless ``version`` (or an ``id`` "name:version") says
    which; ``tags``, ``properties`` and ``run_id`` narrow the choice as in ``Model.list``."""

    def __init__(  # noqa: PLR0913, PLR0917  # Azure ML v1's constructor, kept for its users' scripts
        self,
        workspace: Workspace,
        name: str | None = None,
        id: str | None = None,  # v1's parameter name
        tags: Sequence[TagFilter] | None = None,
        properties: Sequence[TagFilter] | None = None,
        version: int | None = None,
        run_id: str | None = None,
        model_framework: str | None = None,
        expand: bool = True,  # v1's; everything is always loaded here
        **kwargs: Any,  # v1 accepts more keywords; none matters here
    ) -> None:
        if id is not None:
            name, _, ver = id.rpartition(":")
            if not ver.isdigit():
                raise WebserviceException(f"model id {id!r} is not NAME:VERSION")
            version = int(ver)
        if not name:
            raise WebserviceException("Model needs a name or an id (NAME:VERSION)")
        self.workspace = workspace
        filters = tags or properties or run_id or model_framework
        if filters and version is None:
            found = [
                r
                for r in Model._records(workspace, name, tags, properties, run_id)
                if model_framework is None or r.framework == model_framework
            ]
            if not found:
                raise WebserviceException(
                    f"ModelNotFound: no version of model {name!r} has those tags, properties or run"
                )
            self._record = found[0]
        else:
            self._record = workspace._run(model_store.get_model(workspace._client, name, version))

    @classmethod
    def _of(cls, workspace: Workspace, record: m.ModelRecord) -> Model:
        model = cls.__new__(cls)
        model.workspace = workspace
        model._record = record
        return model

    @staticmethod
    def _records(
        workspace: Workspace,
        name: str | None,
        tags: Sequence[TagFilter] | None,
        properties: Sequence[TagFilter] | None,
        run_id: str | None,
        *,
        latest: bool = False,
    ) -> builtins.list[m.ModelRecord]:
        records = workspace._run(model_store.all_models(workspace._client))
        return model_store.select(
            records, name=name, tags=tags, properties=properties, run_id=run_id, latest=latest
        )

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version})"

    # --- attributes, as v1 names them -----------------------------------------------------

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def version(self) -> int:
        return self._record.version

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._record.tags)

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._record.properties)

    @property
    def description(self) -> str | None:
        return self._record.description

    @property
    def created_time(self) -> datetime:
        return datetime.fromtimestamp(self._record.created_at, UTC)

    @property
    def run_id(self) -> str | None:
        return self._record.run_id

    @property
    def experiment_name(self) -> str | None:
        return self._record.experiment

    @property
    def model_framework(self) -> str | None:
        return self._record.framework

    @property
    def model_framework_version(self) -> str | None:
        return self._record.framework_version

    @property
    def url(self) -> str:
        """Where the model is kept: ``sortie://models/NAME/VERSION`` in this workspace."""
        return model_store.model_url(self._record)

    @property
    def record(self) -> m.ModelRecord:
        """The stored record: files (path, blob, size, mode) and lineage."""
        return self._record

    def serialize(self) -> dict[str, Any]:
        """The version as plain data (the shape `sortie model show --output json` prints)."""
        return model_store.model_dict(self._record)

    # --- v1's class-level calls ------------------------------------------------------------

    @staticmethod
    def register(  # noqa: PLR0913, PLR0917  # Azure ML v1's signature, kept for its users' scripts
        workspace: Workspace,
        model_path: str | Path,
        model_name: str,
        tags: Mapping[str, object] | None = None,
        properties: Mapping[str, object] | None = None,
        description: str | None = None,
        datasets: object = None,  # no datasets in Sortie
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        child_paths: Sequence[str] | None = None,
        sample_input_dataset: object = None,  # no datasets in Sortie
        sample_output_dataset: object = None,  # no datasets in Sortie
        resource_configuration: object = None,  # no deployment in Sortie
    ) -> Model:
        """Register a local file or folder as the next version of ``model_name``; bytes the
        store already holds are not uploaded again."""
        client = workspace._client
        model_store.check_model_name(model_name)
        files = workspace._run(
            model_store.upload_files(client, Path(model_path), list(child_paths or ()))
        )
        request = model_store.make_request(
            model_name,
            files=files,
            tags=tags,
            properties=properties,
            description=description,
            framework=model_framework,
            framework_version=model_framework_version,
        )
        return Model._of(workspace, workspace._run(model_store.register(client, request)))

    @staticmethod
    def list(  # noqa: PLR0913, PLR0917  # Azure ML v1's signature, kept for its users' scripts
        workspace: Workspace,
        name: str | None = None,
        tags: Sequence[TagFilter] | None = None,
        properties: Sequence[TagFilter] | None = None,
        run_id: str | None = None,
        latest: bool = False,
        dataset_id: str | None = None,  # no datasets in Sortie
        expand: bool = True,  # everything is always loaded here
        page_count: int = 255,  # no paging: one read of the bucket
        model_framework: str | None = None,
    ) -> builtins.list[Model]:
        """Registered versions, by name, newest first; ``tags``/``properties`` entries are
        ``"key"`` or ``["key", "value"]``; ``latest``: only the newest of each name."""
        records = Model._records(workspace, name, tags, properties, run_id, latest=latest)
        return [
            Model._of(workspace, r)
            for r in records
            if model_framework is None or r.framework == model_framework
        ]

    def download(
        self, target_dir: str | Path = ".", exist_ok: bool = False, exists_ok: bool | None = None
    ) -> str:
        """Write the model's files under ``target_dir``; the path of its file or folder.
        An existing file raises WebserviceException unless ``exist_ok`` (v1's older
        spelling ``exists_ok`` too)."""
        ok = exist_ok if exists_ok is None else exists_ok
        ws = self.workspace
        path = ws._run(model_store.download(ws._client, self._record, Path(target_dir), ok))
        return str(path)
