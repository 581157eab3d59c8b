"""Where clients find the broker: --url, then SORTIE_URL, then the profile `sortie up` wrote.

`sortie up` also writes ``config.json`` beside the profile: the workspace configuration that
``Workspace.from_config()`` (``sortie.azureml``) reads, in the shape of the hosted platform's
``config.json``, naming the broker URL and the credentials file (`sortie workspace config`
prints one for any broker).

The profile also names this user's credentials (a ``.creds`` file) and the CA that signed the
broker's TLS certificate. Both are used only for the broker the profile names: credentials are
never offered to another URL unless given for it (--creds, ``SORTIE_CREDS``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs

from sortie.bus.connection import DEFAULT_URL, ENV_CREDS, ENV_TLS_CA, BusAuth

ENV_URL = "SORTIE_URL"
ENV_PROFILE = "SORTIE_PROFILE"


def profile_path() -> Path:
    explicit = os.environ.get(ENV_PROFILE)
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_config_dir("sortie")) / "profile.json"


def workspace_config_path() -> Path:
    """Where `sortie up` writes the workspace configuration: beside the profile."""
    return profile_path().with_name("config.json")


def workspace_config(
    url: str, *, creds: Path | None = None, tls_ca: Path | None = None, name: str = "sortie"
) -> dict[str, object]:
    """The workspace configuration for the broker at ``url``: its URL and the paths of the
    credentials and CA to use for it (never a secret itself)."""
    data: dict[str, object] = {"workspace_name": name, "url": url}
    if creds is not None:
        data["creds"] = str(creds)
    if tls_ca is not None:
        data["tls_ca"] = str(tls_ca)
    return data


def _write_private_json(path: Path, data: dict[str, object]) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    tmp.chmod(0o600)
    tmp.replace(path)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("sortie"))


def write_profile(
    url: str,
    data_dir: Path,
    pid: int,
    *,
    creds: Path | None = None,
    tls_ca: Path | None = None,
    dashboard_url: str | None = None,
) -> Path:
    """Write the client profile and the workspace configuration beside it, readable by
    their owner only. They name the credentials file; they never hold a secret.
    ``dashboard_url``: where `sortie up` serves the dashboard (``Run.get_portal_url``)."""
    path = profile_path()
    data: dict[str, object] = {"url": url, "data_dir": str(data_dir), "pid": pid}
    if dashboard_url is not None:
        data["dashboard_url"] = dashboard_url
    if creds is not None:
        data["creds"] = str(creds)
    if tls_ca is not None:
        data["tls_ca"] = str(tls_ca)
    _write_private_json(path, data)
    _write_private_json(workspace_config_path(), workspace_config(url, creds=creds, tls_ca=tls_ca))
    return path


def read_profile() -> dict[str, object] | None:
    try:
        data = json.loads(profile_path().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_profile_if_ours(pid: int, url: str) -> None:
    """Remove the profile if this process wrote it (its pid and its broker's URL): one that
    another `sortie up` wrote since stays."""
    data = read_profile()
    if data is not None and data.get("pid") == pid and data.get("url") == url:
        profile_path().unlink(missing_ok=True)
        workspace_config_path().unlink(missing_ok=True)


def resolve_url(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    env = os.environ.get(ENV_URL)
    if env:
        return env
    data = read_profile()
    if data is not None and isinstance(data.get("url"), str):
        return str(data["url"])
    return DEFAULT_URL


def resolve_auth(url: str, *, creds: Path | None = None, tls_ca: Path | None = None) -> BusAuth:
    """Credentials and TLS trust for ``url``: the given ones, then ``SORTIE_CREDS`` /
    ``SORTIE_TLS_CA``, then the profile's, if the profile is for this ``url``."""
    env_creds = os.environ.get(ENV_CREDS)
    env_ca = os.environ.get(ENV_TLS_CA)
    data = read_profile() or {}
    ours = data.get("url") == url

    def pick(given: Path | None, env: str | None, key: str) -> Path | None:
        if given is not None:
            return given.expanduser()
        if env:
            return Path(env).expanduser()
        value = data.get(key)
        return Path(value) if ours and isinstance(value, str) else None

    return BusAuth(
        creds=pick(creds, env_creds, "creds"),
        tls_ca=pick(tls_ca, env_ca, "tls_ca"),
    )
