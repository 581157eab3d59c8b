"""Host facts an agent advertises: CPUs, memory, GPUs. Parsing is pure; probing never raises.

GPU discovery itself (NVML, then nvidia-smi) is in :mod:`agents.gpus`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from sortie.agents.gpus import gpu_type_of, probe_gpus
from sortie.proto import messages as m


def parse_meminfo(text: str) -> int:
    """MemTotal from /proc/meminfo text, in MiB (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) // 1024
    return 0


def parse_nvidia_smi(text: str) -> tuple[int, str | None]:
    """Count and type of GPUs from ``nvidia-smi --query-gpu=name --format=csv,noheader``."""
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        return 0, None
    return len(names), names[0]


def memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        return parse_meminfo(meminfo.read_text())
    except OSError:
        return 0


def gpus() -> tuple[int, str | None]:
    """Count and type of this host's GPUs (0, None without NVML and nvidia-smi)."""
    devices = probe_gpus()
    return len(devices), gpu_type_of(devices)


def hostname() -> str:
    return socket.gethostname()


def host_capacity(devices: list[m.GpuDevice] | None = None) -> m.Capacity:
    """CPUs and memory of this host, with GPUs from ``devices`` (probed when None)."""
    if devices is None:
        devices = probe_gpus()
    return m.Capacity(
        cpus=float(os.cpu_count() or 1),
        memory_mb=memory_mb(),
        gpus=len(devices),
        gpu_type=gpu_type_of(devices),
    )
