"""``azureml.core.workspace``: ``Workspace``, a connection to one Sortie installation.

``Workspace.from_config()`` reads a ``config.json`` in the hosted platform's shape that also
names the broker (``url``) and the credentials file (``creds``, and ``tls_ca``): `sortie up`
writes one beside its profile, and `sortie workspace config` prints one. Without a ``url`` it
connects as the CLI does (``SORTIE_URL``, then the `sortie up` profile). Subscription ids,
resource groups and the like are kept on the object, never needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sortie.azureml.exceptions import UserErrorException
from sortie.bus.profile import resolve_auth, workspace_config, workspace_config_path
from sortie.client import sdk

if TYPE_CHECKING:
    from sortie.azureml.core.compute.compute import ComputeTarget
    from sortie.azureml.core.experiment import Experiment
    from sortie.azureml.core.run import Run

__all__ = ["Workspace"]

CONFIG_FILE = "config.json"
_RECORDED = ("subscription_id", "resource_group", "location", "sku", "tags", "auth")


class Workspace(sdk.Workspace):
    """v1's ``Workspace(subscription_id, resource_group, workspace_name, ...)``: connects to
    the installation the `sortie up` profile (or ``SORTIE_URL``) names."""

    _creds: Path | None
    _tls_ca: Path | None

    def __init__(  # noqa: PLR0917  # the hosted SDK v1's signature, kept for its users' scripts
        self,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace_name: str | None = None,
        auth: Any = None,
        _location: str | None = None,
        _disable_service_check: bool = False,
        _workspace_id: str | None = None,
        sku: str = "basic",
        tags: dict[str, str] | None = None,
        _cloud: str = "AzureCloud",
    ) -> None:
        sdk.Workspace.__init__(self, *sdk._open(None, None, None))
        self._creds = self._tls_ca = None
        self._record(
            name=workspace_name,
            subscription_id=subscription_id,
            resource_group=resource_group,
            location=_location,
            sku=sku,
            tags=tags,
            auth=auth,
        )

    def _record(self, name: str | None, **names: Any) -> None:
        self.name = name or "sortie"
        for key in _RECORDED:
            setattr(self, key, names.get(key))

    def write_config(self, path: str | Path | None = None, file_name: str | None = None) -> str:
        """Write this workspace's ``config.json`` (the broker URL and the paths of the
        credentials and CA it uses; never a secret) to ``PATH/.azureml/`` (default: the
        current directory), where ``from_config`` finds it. Returns the file's path."""
        auth = resolve_auth(self.url, creds=self._creds, tls_ca=self._tls_ca)
        config = workspace_config(self.url, creds=auth.creds, tls_ca=auth.tls_ca, name=self.name)
        config.update({k: getattr(self, k) for k in _RECORDED[:3] if getattr(self, k)})
        folder = Path(path or ".") / ".azureml"
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / (file_name or CONFIG_FILE)
        file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return str(file)

    @classmethod
    def _opened(
        cls, url: str | None, creds: str | None, tls_ca: str | None, name: str | None, **names: Any
    ) -> Workspace:
        ws = cls.__new__(cls)
        sdk.Workspace.__init__(ws, *sdk._open(url, creds, tls_ca))
        ws._creds = Path(creds) if creds else None
        ws._tls_ca = Path(tls_ca) if tls_ca else None
        ws._record(name, **names)
        return ws

    @staticmethod
    def get(  # noqa: PLR0917  # the hosted SDK v1's signature, kept for its users' scripts
        name: str,
        auth: Any = None,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        location: str | None = None,
        cloud: str = "AzureCloud",
        id: str | None = None,  # v1's parameter name
    ) -> Workspace:
        return Workspace._opened(
            None,
            None,
            None,
            name,
            subscription_id=subscription_id,
            resource_group=resource_group,
            location=location,
            auth=auth,
        )

    @staticmethod
    def from_config(
        path: str | Path | None = None,
        auth: Any = None,
        _logger: Any = None,
        _file_name: str | None = None,
    ) -> Workspace:
        """Connect as ``config.json`` says: the file ``path``, or the first ``config.json``
        (or ``.azureml/config.json``) in ``path`` (default: the current directory) or a
        folder above it, else the one `sortie up` wrote."""
        file = find_config(path, _file_name or CONFIG_FILE)
        config = read_config(file)
        return Workspace._opened(
            _text(config, "url", file),
            _text(config, "creds", file),
            _text(config, "tls_ca", file),
            _text(config, "workspace_name", file),
            subscription_id=config.get("subscription_id"),
            resource_group=config.get("resource_group"),
            location=config.get("location"),
            auth=auth,
        )

    @property
    def compute_targets(self) -> dict[str, ComputeTarget]:  # type: ignore[override]  # v1: a property
        """name -> ``AmlCompute`` or ``RemoteCompute``."""
        from sortie.azureml.core.compute.compute import (
            ComputeTarget,  # compute imports this module's floor mates; load on use
        )

        return {t.name: t for t in ComputeTarget.list(self)}

    @property
    def experiments(self) -> dict[str, Experiment]:
        from sortie.azureml.core.experiment import Experiment  # experiment imports this module

        return {e.name: e for e in Experiment.list(self)}

    def get_run(self, run_id: str) -> Run:
        from sortie.azureml.core.run import Run  # run imports this module's floor mates

        return Run.get(self, run_id)

    def get_details(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, **{k: getattr(self, k) for k in _RECORDED[:4]}}

    def __repr__(self) -> str:
        return f"Workspace.create(name={self.name!r}, url={self.url!r})"


def find_config(path: str | Path | None, file_name: str = CONFIG_FILE) -> Path:
    """The configuration file to read (see ``Workspace.from_config``)."""
    start = Path(path).expanduser() if path is not None else Path.cwd()
    if start.is_file():
        return start
    for folder in (start.resolve(), *start.resolve().parents):
        for candidate in (folder / file_name, folder / ".azureml" / file_name):
            if candidate.is_file():
                return candidate
    written = workspace_config_path()
    if path is None and file_name == CONFIG_FILE and written.is_file():
        return written
    raise UserErrorException(
        f"no {file_name} in {start} or a folder above it, and no `sortie up` is running here: "
        "start one (`sortie up`), or write one with `sortie workspace config > config.json`"
    )


def read_config(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserErrorException(f"cannot read workspace configuration {file}: {exc}") from None
    if not isinstance(data, dict):
        raise UserErrorException(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def _text(config: dict[str, Any], key: str, file: Path) -> str | None:
    value = config.get(key)
    if value is not None and not isinstance(value, str):
        raise UserErrorException(f"{file}: {key!r} must be a string, got {value!r}")
    return value
