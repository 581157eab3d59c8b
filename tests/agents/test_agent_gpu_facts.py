"""GPU detection parsing, on output recorded from a real NVIDIA H100 host (no GPU here).

Recorded 2026-11-22 on a lent H100 machine with `nvidia-smi --query-gpu=name
--format=csv,noheader`; there, the real code path (`agents.facts.host_capacity()`) reported
Capacity(cpus=16.0, memory_mb=128887, gpus=1, gpu_type='NVIDIA H100 80GB HBM3'), and a run
submitted with --gpus 1 through `sortie up` was placed and ran on the GPU.
"""

from pathlib import Path

from sortie.agents.facts import gpus, parse_nvidia_smi

DATA = Path(__file__).parent / "data"


def test_parses_recorded_h100_output() -> None:
    text = (DATA / "nvidia-smi-name-h100.txt").read_text()
    assert parse_nvidia_smi(text) == (1, "NVIDIA H100 80GB HBM3")


def test_parses_several_gpus() -> None:
    line = (DATA / "nvidia-smi-name-h100.txt").read_text().strip()
    assert parse_nvidia_smi("\n".join([line] * 8) + "\n") == (8, "NVIDIA H100 80GB HBM3")


def test_no_nvidia_smi_means_no_gpus() -> None:
    # the real probe on this machine, which has no nvidia-smi
    import shutil

    if shutil.which("nvidia-smi") is None:
        assert gpus() == (0, None)
    else:  # on a GPU host the probe must find at least one
        count, kind = gpus()
        assert count >= 1 and kind
