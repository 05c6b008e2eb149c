"""What the code runs on, for manifests, model cards and benchmark results."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def hardware_description(device: torch.device | None = None) -> dict:
    """What the run ran on, for manifests and model cards; with a CUDA ``device``, its GPU too."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hardware = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device is not None and device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
        hardware["cuda"] = torch.version.cuda
    return hardware
