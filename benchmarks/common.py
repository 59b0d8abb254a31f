"""Shared by the benchmark scripts: machine description and result files."""
from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _threadpools() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return threadpool_info()


def machine() -> str:
    """CPU, cores, RAM, Python/numpy/BLAS/torch/Ray versions (and GPU) as markdown bullets."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                if line.startswith("model name")), platform.processor())
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    blas = ", ".join(f"{i['internal_api']} {i['version']}" for i in _threadpools())
    lines = [f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {ram:.0f} GiB",
             f"- Python {platform.python_version()}, numpy {np.__version__}, "
             f"BLAS: {blas or 'unknown'}"]
    try:
        import ray
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        lines.append(f"- torch {torch.__version__}, Ray {ray.__version__}, GPU: {gpu}")
    except ImportError:
        pass
    return "\n".join(lines) + "\n"


def command() -> str:
    return f"`python {shlex.join(sys.argv)}`"


def write_result(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text, encoding="utf-8")
    return path
