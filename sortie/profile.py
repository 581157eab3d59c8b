"""Where clients find the broker: --url, then SORTIE_URL, then the profile `sortie up` wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs

from sortie.bus import DEFAULT_URL

ENV_URL = "SORTIE_URL"
ENV_PROFILE = "SORTIE_PROFILE"


def profile_path() -> Path:
    explicit = os.environ.get(ENV_PROFILE)
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_config_dir("sortie")) / "profile.json"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("sortie"))


def write_profile(url: str, data_dir: Path, pid: int) -> Path:
    """Write the client profile, readable by its owner only."""
    path = profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "data_dir": str(data_dir), "pid": pid}, fh)
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def read_profile() -> dict[str, object] | None:
    try:
        data = json.loads(profile_path().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_profile_if_ours(pid: int) -> None:
    data = read_profile()
    if data is not None and data.get("pid") == pid:
        profile_path().unlink(missing_ok=True)


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
