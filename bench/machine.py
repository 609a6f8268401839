"""What machine a benchmark ran on, recorded in every bench JSON: the figures move with the CPU.

The project's machines change kind (AVX-512/VNNI EPYCs, then AVX2-only Zen 3), and ONNX Runtime,
TensorFlow and numpy each pick kernels by instruction set, so a ratio means little without them.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any

# The instruction sets our kernels' speed (and, before int8 scheme 2, int8 results) depend on.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_info() -> dict[str, Any]:
    """``{"model": ..., "flags": {"avx2": True, ...}}`` from /proc/cpuinfo (Linux)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                if model != "unknown" and flags:
                    break
    except OSError:
        pass
    return {"model": model, "flags": {name: name in flags for name in CPU_FLAGS}}


def cpu_summary(info: dict[str, Any] | None = None) -> str:
    """``AMD EPYC (avx2, avx512f, avx512_vnni)``: the model and the flags it has."""
    info = info or cpu_info()
    have = [name for name, on in info["flags"].items() if on]
    return f"{info['model']} ({', '.join(have) or 'none of ' + '/'.join(CPU_FLAGS)})"


def machine_info() -> dict[str, Any]:
    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001 - informational only
        mem_gb = None
    libs: dict[str, str] = {}
    try:
        from models.registry import library_versions

        libs = library_versions()
    except Exception:  # noqa: BLE001 - informational only
        pass
    info = cpu_info()
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu": info["model"], "cpu_flags": info["flags"], "memory_gb": mem_gb,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(), "python": platform.python_version(), "libraries": libs}
