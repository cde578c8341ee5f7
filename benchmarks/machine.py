"""A one-line description of this machine, printed next to every benchmark figure."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_description() -> str:
    """CPU model, cores, memory, Python and torch versions: printed next to every figure."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch_version = "absent"
    return (
        f"{cpu}; {os.cpu_count()} cores; {mem_gib:.0f} GiB RAM; "
        f"Python {platform.python_version()}; torch {torch_version}; {platform.system()} {platform.release()}"
    )
