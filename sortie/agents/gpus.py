"""The agent's GPUs: discovery, restriction to configured indices, and handing them to runs.

Discovery asks NVML (``pynvml`` from nvidia-ml-py) first and falls back to ``nvidia-smi``;
with neither, the host has no GPUs (never an error). Parsing and choosing are pure:
:func:`parse_smi_query`, :func:`restrict`, :func:`pick_gpus`, :func:`gpu_request_error`.
:class:`GpuPool` is the agent's one record of which GPU is given to which attempt.

Indices are NVML/nvidia-smi indices (PCI bus order). A run sees its GPUs through
``CUDA_VISIBLE_DEVICES`` with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so CUDA numbers them the same
way (CUDA's default order is "fastest first", which can differ on mixed hosts).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable

import structlog

from sortie.proto import messages as m

GpuProbe = Callable[[], list[m.GpuDevice]]

SMI_QUERY = [
    "--query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu",
    "--format=csv,noheader,nounits",
]
SMI_TIMEOUT_S = 10.0
MIB = 1024 * 1024

log = structlog.get_logger()


class GpuConfigError(ValueError):
    """The agent's GPU configuration cannot be served on this host."""


# --- pure parts ------------------------------------------------------------------------------


def _int_or_none(field: str) -> int | None:
    """``"81559"`` -> 81559; ``"[N/A]"``, ``"[Not Supported]"``, ``""`` -> None."""
    text = field.strip().removesuffix("MiB").removesuffix("%").strip()
    try:
        return int(float(text))
    except ValueError:
        return None


def parse_smi_query(text: str) -> list[m.GpuDevice]:
    """GPUs from ``nvidia-smi --query-gpu=index,name,uuid,memory.total[,memory.used,
    utilization.gpu] --format=csv,noheader[,nounits]``.

    The first four columns are required; a line without them, or with an index that is not a
    number, is skipped. Values nvidia-smi cannot give (``[N/A]``, ``[Not Supported]``) become
    0 for memory and None for utilisation.
    """
    out: list[m.GpuDevice] = []
    for raw in text.splitlines():
        cols = [c.strip() for c in raw.split(",")]
        if len(cols) < 4:
            continue
        index = _int_or_none(cols[0])
        if index is None or index < 0 or not cols[1]:
            continue
        out.append(
            m.GpuDevice(
                index=index,
                name=cols[1],
                uuid=cols[2] if cols[2].startswith(("GPU-", "MIG-")) else None,
                memory_total_mb=_int_or_none(cols[3]) or 0,
                memory_used_mb=(_int_or_none(cols[4]) or 0) if len(cols) > 4 else 0,
                utilization_pct=_int_or_none(cols[5]) if len(cols) > 5 else None,
            )
        )
    return sorted(out, key=lambda d: d.index)


def restrict(devices: list[m.GpuDevice], indices: list[int] | None) -> list[m.GpuDevice]:
    """The devices this agent serves: all, or exactly ``indices`` (an agent per GPU).

    Raises :class:`GpuConfigError` naming what exists when an index is not on this host.
    """
    if indices is None:
        return list(devices)
    by_index = {d.index: d for d in devices}
    missing = sorted({i for i in indices if i not in by_index})
    if missing:
        have = ", ".join(str(i) for i in sorted(by_index)) or "none"
        raise GpuConfigError(
            f"GPU indices {missing} are not on this host (GPUs found: {have}); "
            "fix gpu_indices (--gpus) or leave it out to use every GPU"
        )
    return [by_index[i] for i in sorted(set(indices))]


def gpu_type_of(devices: list[m.GpuDevice]) -> str | None:
    """The name advertised as ``Capacity.gpu_type``: the first device's (lowest index)."""
    return devices[0].name if devices else None


def pick_gpus(free: list[int], n: int) -> list[int] | None:
    """``n`` GPUs from ``free``, lowest first; None if there are not enough (or n < 0)."""
    if n < 0:
        return None
    choice = sorted(set(free))[:n]
    return choice if len(choice) == n else None


def gpu_request_error(devices: list[m.GpuDevice], resources: m.Resources) -> str | None:
    """Why this agent can never give a run the GPUs it asks for (None: it can)."""
    if resources.gpus > len(devices):
        return (
            f"the run asks for {resources.gpus} GPUs but this agent has {len(devices)}; "
            "ask for fewer or use a target with bigger GPU nodes"
        )
    wanted = resources.gpu_type
    if wanted:
        names = sorted({d.name for d in devices})
        if not any(wanted.lower() in name.lower() for name in names):
            have = ", ".join(names) or "no GPUs"
            return (
                f"the run asks for GPU type {wanted!r} but this agent has {have}; "
                "fix resources.gpu_type or use a target with that GPU"
            )
    return None


def cuda_env(gpus: list[int] | None) -> dict[str, str]:
    """The environment that shows a run its GPUs (nothing on an agent without GPUs)."""
    if gpus is None:
        return {}
    return {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpus),
    }


def merge_readings(known: list[m.GpuDevice], fresh: Iterable[m.GpuDevice]) -> list[m.GpuDevice]:
    """``known`` devices with memory/utilisation from ``fresh`` (matched by index, then
    uuid). The set of devices never changes: a device missing from ``fresh`` keeps its
    last readings."""
    fresh = list(fresh)
    by_uuid = {d.uuid: d for d in fresh if d.uuid}
    by_index = {d.index: d for d in fresh}
    out: list[m.GpuDevice] = []
    for d in known:
        new = by_uuid.get(d.uuid) if d.uuid else None
        if new is None:
            new = by_index.get(d.index)
            if new is not None and d.uuid and new.uuid and new.uuid != d.uuid:
                new = None
        if new is None:
            out.append(d)
            continue
        out.append(
            m.GpuDevice(
                index=d.index,
                name=d.name,
                uuid=d.uuid,
                memory_total_mb=new.memory_total_mb or d.memory_total_mb,
                memory_used_mb=new.memory_used_mb,
                utilization_pct=new.utilization_pct,
            )
        )
    return out


# --- which attempt holds which GPU ------------------------------------------------------------


Holder = tuple[str, int]  # (run_id, attempt)


class GpuPool:
    """The agent's GPUs and who holds them. One per agent; used from the event loop only."""

    def __init__(self, devices: list[m.GpuDevice]) -> None:
        self.devices = sorted(devices, key=lambda d: d.index)
        self.held: dict[int, Holder] = {}

    @property
    def has_gpus(self) -> bool:
        return bool(self.devices)

    def free(self) -> list[int]:
        return [d.index for d in self.devices if d.index not in self.held]

    def acquire(self, holder: Holder, n: int) -> list[int] | None:
        """Give ``holder`` ``n`` free GPUs (lowest first); None if there are not enough."""
        self.release(holder)
        chosen = pick_gpus(self.free(), n)
        if chosen is not None:
            for i in chosen:
                self.held[i] = holder
        return chosen

    def release(self, holder: Holder) -> None:
        for i in [i for i, h in self.held.items() if h == holder]:
            del self.held[i]

    def update(self, fresh: list[m.GpuDevice]) -> None:
        self.devices = merge_readings(self.devices, fresh)

    def view(self) -> list[m.GpuDevice]:
        """The devices as heartbeats carry them: with the run each is given to."""
        out: list[m.GpuDevice] = []
        for d in self.devices:
            holder = self.held.get(d.index)
            out.append(
                d
                if holder is None
                else m.GpuDevice(
                    index=d.index,
                    name=d.name,
                    uuid=d.uuid,
                    memory_total_mb=d.memory_total_mb,
                    memory_used_mb=d.memory_used_mb,
                    utilization_pct=d.utilization_pct,
                    run_id=holder[0],
                )
            )
        return out


# --- probes (I/O; never raise) ------------------------------------------------------------------


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def probe_nvml() -> list[m.GpuDevice]:
    """GPUs through NVML. Raises whatever pynvml raises when NVML is not there."""
    import pynvml  # imported here: the agent must start without it

    pynvml.nvmlInit()
    try:
        out: list[m.GpuDevice] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:  # v2 leaves out memory the driver reserves, as nvidia-smi does
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
            except (pynvml.NVMLError, AttributeError):
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                util: int | None = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                util = None  # e.g. not supported on this device or in a MIG mode
            try:
                uuid: str | None = _text(pynvml.nvmlDeviceGetUUID(handle))
            except pynvml.NVMLError:
                uuid = None
            out.append(
                m.GpuDevice(
                    index=i,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    uuid=uuid,
                    memory_total_mb=int(mem.total) // MIB,
                    memory_used_mb=int(mem.used) // MIB,
                    utilization_pct=util,
                )
            )
        return out
    finally:
        pynvml.nvmlShutdown()


def probe_smi() -> list[m.GpuDevice] | None:
    """GPUs through ``nvidia-smi``; None when it is not installed or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *SMI_QUERY], capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("nvidia-smi failed", error=repr(exc))
        return None
    if done.returncode != 0:
        log.info("nvidia-smi failed", code=done.returncode, stderr=done.stderr.strip()[:200])
        return None
    return parse_smi_query(done.stdout)


def probe_gpus() -> list[m.GpuDevice]:
    """This host's GPUs: NVML, else nvidia-smi, else none. Never raises."""
    try:
        return probe_nvml()
    except Exception as exc:  # noqa: BLE001 - any NVML failure means: try nvidia-smi
        # pynvml may be missing (ImportError), find no library or driver (its NVMLError, only
        # nameable once imported) or be an older binding: each is a reason to ask nvidia-smi
        nvml_error = repr(exc)
    found = probe_smi()
    if found is None:
        log.debug("no GPUs: neither NVML nor nvidia-smi is usable", nvml=nvml_error)
        return []
    return found
