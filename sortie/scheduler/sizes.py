"""The node size catalog: the shapes a cluster's ``vm_size`` may name.

Built-in sizes follow the hosted platform's names (``STANDARD_D4``, ``STANDARD_NC6S_V3``, ...)
plus two small ones for trying things on one machine (``LOCAL_SMALL``, ``LOCAL_MEDIUM``).
Names match case-insensitively; the catalog keeps them upper-case. The hosted platform's
current size names (``STANDARD_D2_V2``, ``STANDARD_DS3_V2``, ...) are aliases (``ALIASES``):
each is listed as a size of its own with the shape of the size it stands for, so clusters,
``sortie compute sizes`` and the SDK accept and list them like any other.

Operators add or override sizes with a file named by the environment variable
``SORTIE_SIZES_FILE``: a JSON or YAML list of entries such as::

    - {name: LAB_A6000, cpus: 16, memory_mb: 65536, gpus: 2, gpu_type: A6000}
    - {name: STANDARD_D4, cpus: 4, memory_mb: 16384}   # overrides the built-in

``cpus`` and ``memory_mb`` are required and positive; ``gpus`` (default 0) and ``gpu_type``
(default none) are optional. A bad file raises ``SizesError`` naming the file and the entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from sortie.proto import messages as m

SIZES_FILE_ENV = "SORTIE_SIZES_FILE"

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SizesError(ValueError):
    """The operator's sizes file is unreadable or has a bad entry."""


def _shape(
    name: str, cpus: float, memory_mb: int, gpus: int = 0, gpu_type: str | None = None
) -> m.NodeShape:
    return m.NodeShape(name=name, cpus=cpus, memory_mb=memory_mb, gpus=gpus, gpu_type=gpu_type)


BUILTIN: dict[str, m.NodeShape] = {
    s.name: s
    for s in (
        _shape("STANDARD_D2", 2, 7168),
        _shape("STANDARD_D4", 4, 14336),
        _shape("STANDARD_D8", 8, 28672),
        _shape("STANDARD_D16", 16, 57344),
        _shape("STANDARD_NC6", 6, 57344, 1, "K80"),
        _shape("STANDARD_NC24", 24, 229376, 4, "K80"),
        _shape("STANDARD_NC6S_V3", 6, 114688, 1, "V100"),
        _shape("STANDARD_NC24ADS_A100_V4", 24, 225280, 1, "A100"),
        _shape("STANDARD_ND96ASR_V4", 96, 921600, 8, "A100"),
        _shape("STANDARD_NC40ADS_H100_V5", 40, 327680, 1, "H100"),
        _shape("LOCAL_SMALL", 1, 1024),
        _shape("LOCAL_MEDIUM", 2, 2048),
    )
}


# hosted-platform name -> the catalog size with the same CPUs, memory and GPUs
ALIASES: dict[str, str] = {
    "STANDARD_D2_V2": "STANDARD_D2",
    "STANDARD_DS2_V2": "STANDARD_D2",
    "STANDARD_D3_V2": "STANDARD_D4",
    "STANDARD_DS3_V2": "STANDARD_D4",
    "STANDARD_D4_V2": "STANDARD_D8",
    "STANDARD_DS4_V2": "STANDARD_D8",
    "STANDARD_D5_V2": "STANDARD_D16",
    "STANDARD_DS5_V2": "STANDARD_D16",
}


def with_aliases(catalog: Mapping[str, m.NodeShape]) -> dict[str, m.NodeShape]:
    """``catalog`` plus each alias whose size it has and that it does not name itself."""
    out = dict(catalog)
    for alias, size in ALIASES.items():
        if alias not in out and size in catalog:
            out[alias] = msgspec.structs.replace(catalog[size], name=alias)
    return out


def lookup(catalog: Mapping[str, m.NodeShape], name: str) -> m.NodeShape | None:
    """The shape called ``name`` (any case), or None."""
    return catalog.get(name.upper())


def load_catalog(extra: Path | None = None) -> dict[str, m.NodeShape]:
    """The built-in sizes, plus (and overridden by) those in the operator file ``extra``,
    plus the aliases of what they hold (an overridden size's alias follows it)."""
    catalog = dict(BUILTIN)
    if extra is not None:
        catalog.update({s.name: s for s in read_sizes_file(extra)})
    return with_aliases(catalog)


def read_sizes_file(path: Path) -> list[m.NodeShape]:
    """Parse and check an operator sizes file (JSON by ``.json`` suffix, YAML otherwise)."""
    where = f"sizes file {path} (from {SIZES_FILE_ENV})"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SizesError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SizesError(f"{where}: not valid {_kind(path)}: {exc}") from None
    if not isinstance(data, list):
        raise SizesError(
            f"{where}: expected a list of sizes like "
            "[{name: X, cpus: 4, memory_mb: 16384, gpus: 0}], got "
            f"{type(data).__name__}"
        )
    shapes: list[m.NodeShape] = []
    seen: set[str] = set()
    for i, entry in enumerate(data, start=1):
        shape = _entry(entry, f"{where}, entry {i}")
        if shape.name in seen:
            raise SizesError(f"{where}, entry {i}: size {shape.name} is listed twice")
        seen.add(shape.name)
        shapes.append(shape)
    return shapes


def _kind(path: Path) -> str:
    return "JSON" if path.suffix.lower() == ".json" else "YAML"


def _entry(entry: Any, where: str) -> m.NodeShape:
    if not isinstance(entry, dict):
        raise SizesError(f"{where}: expected a mapping with name, cpus, memory_mb, got {entry!r}")
    name = entry.get("name")
    if isinstance(name, str):
        where = f"{where} ({name})"
    unknown = sorted(set(entry) - {"name", "cpus", "memory_mb", "gpus", "gpu_type"})
    if unknown:
        raise SizesError(
            f"{where}: unknown field(s) {', '.join(map(str, unknown))}; "
            "allowed: name, cpus, memory_mb, gpus, gpu_type"
        )
    try:
        shape = msgspec.convert(entry, m.NodeShape)
    except msgspec.ValidationError as exc:
        raise SizesError(f"{where}: {exc}") from None
    if not _NAME.match(shape.name):
        raise SizesError(
            f"{where}: name {shape.name!r} is not valid: use 1-64 letters, digits, '-' or '_'"
        )
    if not shape.cpus > 0:
        raise SizesError(f"{where}: cpus must be more than 0 (got {shape.cpus})")
    if shape.memory_mb <= 0:
        raise SizesError(f"{where}: memory_mb must be more than 0 (got {shape.memory_mb})")
    if shape.gpus < 0:
        raise SizesError(f"{where}: gpus must be 0 or more (got {shape.gpus})")
    if shape.gpu_type is not None and shape.gpus == 0:
        raise SizesError(f"{where}: gpu_type {shape.gpu_type!r} is set but gpus is 0")
    return msgspec.structs.replace(shape, name=shape.name.upper())
