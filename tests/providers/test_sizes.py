"""The node size catalog: built-ins, lookup, and the operator's sizes file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sortie.proto import messages as m
from sortie.scheduler.sizes import BUILTIN, SizesError, load_catalog, lookup, with_aliases


def test_builtins_cover_cpu_gpu_and_local_sizes() -> None:
    cat = load_catalog(None)
    assert cat == with_aliases(BUILTIN)
    assert cat["STANDARD_D4"] == m.NodeShape(name="STANDARD_D4", cpus=4, memory_mb=14336)
    nd = cat["STANDARD_ND96ASR_V4"]
    assert (nd.cpus, nd.memory_mb, nd.gpus, nd.gpu_type) == (96, 921600, 8, "A100")
    assert cat["LOCAL_SMALL"] == m.NodeShape(name="LOCAL_SMALL", cpus=1, memory_mb=1024)
    assert all(name == name.upper() == s.name for name, s in cat.items())
    assert all((s.gpus == 0) == (s.gpu_type is None) for s in cat.values())


@pytest.mark.parametrize("name", ["standard_nc6s_v3", "Standard_NC6s_v3", "STANDARD_NC6S_V3"])
def test_lookup_ignores_case(name: str) -> None:
    shape = lookup(load_catalog(None), name)
    assert shape is not None
    assert (shape.name, shape.gpus, shape.gpu_type) == ("STANDARD_NC6S_V3", 1, "V100")


def test_lookup_unknown_is_none() -> None:
    assert lookup(load_catalog(None), "STANDARD_XL_NOPE") is None


@pytest.mark.parametrize(
    ("alias", "size"),
    [
        ("STANDARD_D2_V2", "STANDARD_D2"),
        ("standard_ds3_v2", "STANDARD_D4"),
        ("Standard_D5_v2", "STANDARD_D16"),
    ],
)
def test_hosted_platform_names_are_aliases_listed_as_sizes(alias: str, size: str) -> None:
    shape = lookup(load_catalog(None), alias)
    assert shape is not None
    assert shape.name == alias.upper()
    assert (shape.cpus, shape.memory_mb, shape.gpus) == (
        BUILTIN[size].cpus,
        BUILTIN[size].memory_mb,
        BUILTIN[size].gpus,
    )


def test_an_alias_follows_its_overridden_size_and_a_file_may_name_it(tmp_path: Path) -> None:
    f = tmp_path / "sizes.yaml"
    f.write_text(
        "- {name: STANDARD_D2, cpus: 2, memory_mb: 8192}\n"
        "- {name: STANDARD_DS2_V2, cpus: 2, memory_mb: 4096}\n"
    )
    cat = load_catalog(f)
    assert cat["STANDARD_D2_V2"].memory_mb == 8192
    assert cat["STANDARD_DS2_V2"].memory_mb == 4096


def test_yaml_file_adds_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "sizes.yaml"
    f.write_text(
        "- {name: lab_a6000, cpus: 16, memory_mb: 65536, gpus: 2, gpu_type: A6000}\n"
        "- name: Standard_D4\n  cpus: 4\n  memory_mb: 16384\n"
    )
    cat = load_catalog(f)
    assert lookup(cat, "LAB_A6000") == m.NodeShape(
        name="LAB_A6000", cpus=16, memory_mb=65536, gpus=2, gpu_type="A6000"
    )
    assert cat["STANDARD_D4"].memory_mb == 16384  # overridden
    assert cat["STANDARD_D8"] == BUILTIN["STANDARD_D8"]  # untouched
    assert BUILTIN["STANDARD_D4"].memory_mb == 14336  # built-ins are not mutated


def test_json_file_adds(tmp_path: Path) -> None:
    f = tmp_path / "sizes.json"
    f.write_text(json.dumps([{"name": "half", "cpus": 0.5, "memory_mb": 512}]))
    assert lookup(load_catalog(f), "half") == m.NodeShape(name="HALF", cpus=0.5, memory_mb=512)


def test_empty_list_adds_nothing(tmp_path: Path) -> None:
    f = tmp_path / "sizes.yaml"
    f.write_text("[]\n")
    assert load_catalog(f) == with_aliases(BUILTIN)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("s.yaml", "- {name: X, cpus: 2}\n", ["entry 1 (X)", "memory_mb"]),
        ("s.yaml", "- {name: X, cpus: 0, memory_mb: 1}\n", ["entry 1 (X)", "cpus must be"]),
        ("s.yaml", "- {name: X, cpus: 1, memory_mb: -5}\n", ["memory_mb must be more than 0"]),
        ("s.yaml", "- {name: X, cpus: 1, memory_mb: lots}\n", ["entry 1 (X)", "memory_mb"]),
        ("s.yaml", "- {name: X, cpus: 1, memory_mb: 1, gpus: -1}\n", ["gpus must be 0 or more"]),
        ("s.yaml", "- {name: X, cpus: 1, memory_mb: 1, gpu_type: A100}\n", ["gpus is 0"]),
        ("s.yaml", "- {name: X, cpus: 1, memory_mb: 1, ram: 4}\n", ["unknown field(s) ram"]),
        ("s.yaml", "- {name: 'a b', cpus: 1, memory_mb: 1}\n", ["name 'a b' is not valid"]),
        ("s.yaml", "- {cpus: 1, memory_mb: 1}\n", ["entry 1", "name"]),
        (
            "s.yaml",
            "- {name: ok, cpus: 1, memory_mb: 1}\n- {name: OK, cpus: 2, memory_mb: 2}\n",
            ["entry 2", "size OK is listed twice"],
        ),
        ("s.yaml", "- just-a-string\n", ["entry 1", "expected a mapping"]),
        ("s.yaml", "name: X\ncpus: 1\n", ["expected a list of sizes"]),
        ("s.yaml", "- {name: X, cpus: [\n", ["not valid YAML"]),
        ("s.json", "[{'name': 'X'}]", ["not valid JSON"]),
    ],
)
def test_bad_file_names_file_and_entry(
    tmp_path: Path, name: str, text: str, expected: list[str]
) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(SizesError) as info:
        load_catalog(f)
    msg = str(info.value)
    assert str(f) in msg and "SORTIE_SIZES_FILE" in msg
    for part in expected:
        assert part in msg


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "nope.yaml"
    with pytest.raises(SizesError, match="cannot read it") as info:
        load_catalog(f)
    assert str(f) in str(info.value)
