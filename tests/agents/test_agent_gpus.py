"""GPU discovery parsing, restriction and choice: the pure parts of ``agents.gpus``.

Recorded on lent NVIDIA H100 hosts (this machine has no GPU):

* ``data/nvidia-smi-query-h100.txt``: ``nvidia-smi --query-gpu=index,name,uuid,memory.total
  --format=csv,noheader`` (4 columns), recorded earlier.
* ``data/nvidia-smi-query-full-h100.txt``: the agent's own query, all 6 columns
  (``index,name,uuid,memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits``),
  recorded 2026-11-22 on an idle H100.
* ``data/nvml-raw-h100.txt``: what pynvml returned there (name, UUID, memory in bytes through
  ``nvmlDeviceGetMemoryInfo`` v1, utilisation). On that host ``agents.gpus.probe_nvml()`` and
  ``probe_smi()`` both returned GpuDevice(index=0, name='NVIDIA H100 80GB HBM3', uuid=...,
  memory_total_mb=81559, memory_used_mb=0, utilization_pct=0) (v2 memory info leaves out the
  480 MiB the driver reserves, as nvidia-smi does), and a process given
  ``CUDA_VISIBLE_DEVICES=0`` / ``""`` by ``cuda_env`` saw 1 / 0 devices in torch.

Constructed here (not recorded): multi-GPU outputs (the recorded H100 line with other indices,
UUIDs and readings), busy readings, ``[N/A]``/``[Not Supported]`` fields and the with-units form.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sortie.agents.facts import host_capacity
from sortie.agents.gpus import (
    GpuConfigError,
    GpuPool,
    cuda_env,
    gpu_request_error,
    gpu_type_of,
    merge_readings,
    parse_smi_query,
    pick_gpus,
    probe_gpus,
    restrict,
)
from sortie.client.run_context import Run
from sortie.proto import messages as m

DATA = Path(__file__).parent / "data"
H100 = "NVIDIA H100 80GB HBM3"
RECORDED_UUID = "GPU-eae4bdce-64ee-1e33-a08f-aa0a725a87a3"


def eight_h100() -> str:
    """Constructed: the recorded full line for indices 0..7, each with its own readings."""
    line = (DATA / "nvidia-smi-query-full-h100.txt").read_text().strip()
    _index, name, uuid, total, _used, _util = (c.strip() for c in line.split(","))
    return "".join(f"{i}, {name}, {uuid[:-1]}{i}, {total}, {100 * i}, {10 * i}\n" for i in range(8))


def dev(index: int, name: str = H100, **kw: object) -> m.GpuDevice:
    return m.GpuDevice(index=index, name=name, **kw)


def test_parses_recorded_four_column_output() -> None:
    got = parse_smi_query((DATA / "nvidia-smi-query-h100.txt").read_text())
    assert got == [
        m.GpuDevice(index=0, name=H100, uuid=RECORDED_UUID, memory_total_mb=81559)
    ]  # no readings in that format: used 0, utilisation unknown


def test_parses_recorded_six_column_output() -> None:
    got = parse_smi_query((DATA / "nvidia-smi-query-full-h100.txt").read_text())
    assert got == [
        m.GpuDevice(
            index=0,
            name=H100,
            uuid="GPU-6cb0f0c8-c5d0-c50e-02e3-c7ab29004bba",
            memory_total_mb=81559,
            memory_used_mb=0,
            utilization_pct=0,
        )
    ]


def test_parses_eight_busy_gpus() -> None:
    got = parse_smi_query(eight_h100())
    assert [d.index for d in got] == list(range(8))
    assert {d.name for d in got} == {H100}
    assert len({d.uuid for d in got}) == 8
    assert got[3].memory_used_mb == 300 and got[3].utilization_pct == 30
    assert got[7].memory_total_mb == 81559


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("\n\n", []),
        ("No devices were found\n", []),
        # with units (no nounits) and fields the device cannot report
        (
            f"1, {H100}, {RECORDED_UUID}, 81559 MiB, 12 MiB, [N/A]\n",
            [dev(1, uuid=RECORDED_UUID, memory_total_mb=81559, memory_used_mb=12)],
        ),
        (
            f"0, {H100}, [N/A], [Not Supported], [Not Supported], [Not Supported]\n",
            [dev(0)],
        ),
        (f"x, {H100}, {RECORDED_UUID}, 81559, 0, 0\n", []),  # index not a number
        (f"0, , {RECORDED_UUID}, 81559, 0, 0\n", []),  # no name
        # order of the output does not matter: devices come sorted by index
        (
            f"2, {H100}, GPU-b, 1, 0, 0\n0, {H100}, GPU-a, 1, 0, 0\n",
            [
                dev(0, uuid="GPU-a", memory_total_mb=1, utilization_pct=0),
                dev(2, uuid="GPU-b", memory_total_mb=1, utilization_pct=0),
            ],
        ),
    ],
)
def test_parse_edge_cases(text: str, expected: list[m.GpuDevice]) -> None:
    assert parse_smi_query(text) == expected


def test_restrict_to_indices() -> None:
    devices = parse_smi_query(eight_h100())
    assert restrict(devices, None) == devices
    assert [d.index for d in restrict(devices, [5, 2, 5])] == [2, 5]
    assert restrict(devices, []) == []
    with pytest.raises(GpuConfigError, match=r"\[8, 9\] are not on this host.*0, 1, 2"):
        restrict(devices, [1, 8, 9])
    with pytest.raises(GpuConfigError, match="GPUs found: none"):
        restrict([], [0])


def test_capacity_from_the_restricted_devices() -> None:
    devices = restrict(parse_smi_query(eight_h100()), [6])
    cap = host_capacity(devices)
    assert cap.gpus == 1 and cap.gpu_type == H100 and cap.cpus >= 1
    assert host_capacity([]).gpus == 0 and host_capacity([]).gpu_type is None
    assert gpu_type_of([dev(3, "B"), dev(1, "A")]) == "B"  # the caller passes them sorted


@pytest.mark.parametrize(
    ("devices", "resources", "problem"),
    [
        ([dev(0)], m.Resources(gpus=1), None),
        ([dev(0)], m.Resources(gpus=1, gpu_type="h100"), None),  # case-insensitive substring
        ([dev(0)], m.Resources(gpus=1, gpu_type="80GB HBM3"), None),
        ([dev(0)], m.Resources(gpus=2), "asks for 2 GPUs but this agent has 1"),
        ([dev(0)], m.Resources(gpus=1, gpu_type="A100"), "GPU type 'A100' but this agent has"),
        ([], m.Resources(gpus=1), "has 0"),
        ([], m.Resources(gpu_type="H100"), "this agent has no GPUs"),
        ([], m.Resources(), None),
        ([dev(0), dev(1, "Tesla T4")], m.Resources(gpus=1, gpu_type="t4"), None),
    ],
)
def test_gpu_request_error(
    devices: list[m.GpuDevice], resources: m.Resources, problem: str | None
) -> None:
    got = gpu_request_error(devices, resources)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_cuda_env() -> None:
    assert cuda_env(None) == {}  # an agent without GPUs leaves CUDA alone
    assert cuda_env([]) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ""}
    assert cuda_env([0, 3])["CUDA_VISIBLE_DEVICES"] == "0,3"


@pytest.mark.parametrize(
    ("free", "n", "expected"),
    [
        ([0, 1, 2], 1, [0]),
        ([3, 1, 2], 2, [1, 2]),  # lowest first
        ([1, 2], 0, []),
        ([], 0, []),
        ([1], 2, None),
        ([1, 1], 2, None),  # a GPU listed twice is still one GPU
        ([1], -1, None),
    ],
)
def test_pick_gpus_table(free: list[int], n: int, expected: list[int] | None) -> None:
    assert pick_gpus(free, n) == expected


@given(st.lists(st.integers(0, 15), max_size=20), st.integers(-2, 20))
def test_pick_gpus_properties(free: list[int], n: int) -> None:
    got = pick_gpus(free, n)
    if got is None:
        assert n < 0 or n > len(set(free))
        return
    assert len(got) == n  # never more (or fewer) than asked
    assert len(set(got)) == len(got)  # never the same GPU twice
    assert set(got) <= set(free)  # only free ones
    assert got == sorted(set(free))[:n]  # the lowest


@given(
    st.integers(0, 8),
    st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 4)), max_size=40),
)
def test_pool_never_gives_a_gpu_twice(size: int, ops: list[tuple[bool, int, int]]) -> None:
    pool = GpuPool([dev(i) for i in range(size)])
    held: dict[tuple[str, int], list[int]] = {}
    for acquire, who, n in ops:
        holder = (f"run{who}", 1)
        if acquire:
            before = len(pool.free()) + len(held.get(holder, []))
            got = pool.acquire(holder, n)
            held.pop(holder, None)
            if got is None:
                assert n > before
            else:
                assert len(got) == n
                held[holder] = got
        else:
            pool.release(holder)
            held.pop(holder, None)
        given_out = [i for gpus in held.values() for i in gpus]
        assert len(given_out) == len(set(given_out))  # never one GPU to two attempts
        assert set(pool.free()) == set(range(size)) - set(given_out)
        view = pool.view()
        assert {d.index for d in view if d.run_id} == set(given_out)
        for holder_, gpus in held.items():
            assert all(view[i].run_id == holder_[0] for i in gpus)


def test_merge_readings_keeps_the_device_set() -> None:
    known = [dev(0, uuid="GPU-a", memory_total_mb=10), dev(1, uuid="GPU-b", memory_total_mb=10)]
    fresh = [
        dev(1, uuid="GPU-b", memory_total_mb=10, memory_used_mb=7, utilization_pct=50),
        dev(2, uuid="GPU-c", memory_used_mb=9),  # not this agent's
    ]
    got = merge_readings(known, fresh)
    assert got[0] == known[0]  # no fresh reading: the last one stays
    assert got[1].memory_used_mb == 7 and got[1].utilization_pct == 50
    assert [d.index for d in got] == [0, 1]
    # an index that now names another card is not taken for ours
    assert merge_readings(known, [dev(0, uuid="GPU-z", memory_used_mb=5)]) == known
    assert merge_readings(known, []) == known


def test_the_real_probe_never_raises() -> None:
    found = probe_gpus()
    if shutil.which("nvidia-smi") is None:
        # here: no NVML library and no nvidia-smi (pynvml is installed, its nvmlInit fails)
        assert found == []
    else:  # on a GPU host it must find at least one
        assert found and all(d.name for d in found)


def test_run_stop_reason(tmp_path: Path) -> None:
    path = tmp_path / "1.stop-reason"
    run = Run({"SORTIE_RUN_ID": "r", "SORTIE_STOP_REASON_FILE": str(path)})
    assert run.stop_reason() is None  # no file yet
    path.write_text("")
    assert run.stop_reason() is None
    path.write_text("preempted\n")
    assert run.stop_reason() == "preempted"
    assert Run({}).stop_reason() is None  # outside Sortie
