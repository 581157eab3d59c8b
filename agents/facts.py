"""Host facts an agent advertises: CPUs, memory, GPUs. Parsing is pure; probing never raises."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from proto import messages as m


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
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0, None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return 0, None
    if out.returncode != 0:
        return 0, None
    return parse_nvidia_smi(out.stdout)


def hostname() -> str:
    return socket.gethostname()


def host_capacity() -> m.Capacity:
    count, kind = gpus()
    return m.Capacity(
        cpus=float(os.cpu_count() or 1), memory_mb=memory_mb(), gpus=count, gpu_type=kind
    )
