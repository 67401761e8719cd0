"""Small measurement helpers: latency summaries, process memory and machine description."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np


def latency_summary(latencies_s: Sequence[float], elapsed_s: float) -> dict[str, float]:
    """QPS (``len / elapsed``) and p50/p99/mean/max latency in milliseconds."""
    lat = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if not len(lat):
        return {"queries": 0, "elapsed_s": elapsed_s, "qps": 0.0, "p50_ms": float("nan"),
                "p99_ms": float("nan"), "mean_ms": float("nan"), "max_ms": float("nan")}
    return {
        "queries": int(len(lat)),
        "elapsed_s": float(elapsed_s),
        "qps": float(len(lat) / elapsed_s) if elapsed_s > 0 else float("nan"),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_ms": float(lat.mean()),
        "max_ms": float(lat.max()),
    }


def proc_status_bytes(pid: int | None, field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM`` ...) of /proc/<pid>/status in bytes, or None."""
    path = f"/proc/{pid if pid is not None else 'self'}/status"
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size (VmRSS of /proc/<pid>/status) in bytes, or None if unavailable."""
    return proc_status_bytes(pid, "VmRSS")


def cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU time of a process (all its threads) from /proc/<pid>/stat."""
    path = f"/proc/{pid if pid is not None else 'self'}/stat"
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU count/affinity/model, memory, platform and library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": _cpu_model(),
        "mem_total_bytes": _mem_total(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "hnswlib": _version("chroma-hnswlib") or _version("hnswlib"),
        "aiohttp": _version("aiohttp"),
        "s5vec": _version("s5vec"),
    }
