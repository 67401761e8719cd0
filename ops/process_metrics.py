"""The ``s5vec_process_*`` metrics (CPU, memory, file descriptors, start time) from what a
process can see of itself.

prometheus-client's own ``ProcessCollector`` reads the boot time from ``/proc/stat`` and
exports nothing at all without it, and systemd's ``ProcSubset=pid`` (in the shipped unit)
mounts a ``/proc`` that has only the process directories. This collector needs only
``/proc/self``: the boot time is the wall clock less ``CLOCK_BOOTTIME``, the clock the
kernel counts a process's start time in (``/proc/stat``'s ``btime`` is derived the same
way).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_PAGE: Final = resource.getpagesize()


def _ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf
        return 100.0


class ProcessCollector(Collector):
    """``<namespace>_process_*`` as prometheus-client names them, read at scrape time from
    ``<proc>/self`` only. Families whose source is missing (no ``/proc``) are left out."""

    def __init__(self, namespace: str, proc: str = "/proc") -> None:
        self._prefix = f"{namespace}_process_"
        self._self = os.path.join(proc, "self")
        self._ticks = _ticks_per_second()
        self._start: float | None = None

    def _stat(self) -> list[bytes]:
        """Fields 3.. of ``/proc/self/stat`` (after the command name, which may hold spaces)."""
        with open(os.path.join(self._self, "stat"), "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()

    def _start_time(self, stat: list[bytes]) -> float | None:
        if self._start is None and hasattr(time, "CLOCK_BOOTTIME"):
            boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
            self._start = boot + float(stat[19]) / self._ticks  # field 22: start time, ticks after boot
        return self._start

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked: which families exist depends on the platform

    def collect(self) -> Iterator[Metric]:
        prefix = self._prefix
        try:
            stat = self._stat()
        except (OSError, IndexError):
            stat = []
        if stat:
            yield GaugeMetricFamily(prefix + "virtual_memory_bytes", "Virtual memory size in bytes.",
                                    value=float(stat[20]))
            yield GaugeMetricFamily(prefix + "resident_memory_bytes", "Resident memory size in bytes.",
                                    value=float(stat[21]) * _PAGE)
            start = self._start_time(stat)
            if start is not None:
                yield GaugeMetricFamily(prefix + "start_time_seconds",
                                        "Start time of the process since unix epoch in seconds.", value=start)
        times = os.times()
        yield CounterMetricFamily(prefix + "cpu_seconds", "Total user and system CPU time spent in seconds.",
                                  value=times.user + times.system)
        try:
            open_fds = len(os.listdir(os.path.join(self._self, "fd")))
        except OSError:
            pass
        else:
            yield GaugeMetricFamily(prefix + "open_fds", "Number of open file descriptors.", value=open_fds)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            yield GaugeMetricFamily(prefix + "max_fds", "Maximum number of open file descriptors.", value=soft)
