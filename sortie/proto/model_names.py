"""The rule for model names, which the client checks before uploading and the scheduler
enforces for every client (they may not import each other)."""

from __future__ import annotations

import re

# Azure ML v1's rule for model names (letters, digits, '-', '_', '.'; a letter or digit
# first; at most 255 characters); it keeps '/' out, which separates name and version in keys
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name a model, or None if it can."""
    if _NAME.match(name):
        return None
    return (
        f"model name {name!r} is not valid: use 1-255 letters, digits, '-', '_' or '.', "
        "starting with a letter or digit"
    )
