"""The health monitor: checks the database against alert thresholds.

Each check has one threshold: above it the alert is a ``warning``, above twice it
``critical`` (memory: above 110 %; storage: at ``storage_max_failures`` failed checkpoints
in a row, or when the backend does not answer at all). The report is
what ``GET /api/v1/admin/health`` returns; active alerts also appear as the
``s5vec_health_alerts`` metric, and every change is logged once by :meth:`check`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .metrics import resident_memory_bytes

if TYPE_CHECKING:
    from .views import EngineState

log = logging.getLogger(__name__)
SEVERITIES: Final = ("warning", "critical")
_CGROUP_ROOT: Final = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """Alert thresholds (the daemon's ``[health]`` section). 0 turns a check off, except
    ``memory_max_bytes`` where 0 means 90 % of the memory limit (cgroup, else physical)."""

    checkpoint_max_age_s: float = 900.0     # last checkpoint older than this
    wal_max_bytes: int = 1 << 30            # write-ahead log larger than this
    memory_max_bytes: int = 0               # resident memory above this
    storage_max_failures: int = 3           # checkpoints failing in a row (1.. = warning, this = critical)
    check_interval_s: float = 30.0          # how often the daemon checks (and logs changes)


@dataclass(frozen=True, slots=True)
class Alert:
    alert: str
    severity: str
    message: str
    value: float
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        return {"alert": self.alert, "severity": self.severity, "message": self.message,
                "value": self.value, "threshold": self.threshold}


def memory_limit_bytes() -> int:
    """This process's memory limit: its cgroup v2 ``memory.max`` (systemd's ``MemoryMax=``,
    a container's limit) if set, else physical memory."""
    try:
        own = next((line[3:].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                    if line.startswith("0::")), "/")
    except OSError:
        own = "/"
    for candidate in (_CGROUP_ROOT / own.lstrip("/") / "memory.max", _CGROUP_ROOT / "memory.max"):
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text != "max":
            try:
                return int(text)
            except ValueError:
                pass
        break
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf
        return 0


def _graded(value: float, limit: float) -> str | None:
    if limit <= 0 or value <= limit:
        return None
    return "critical" if value > 2 * limit else "warning"


class HealthMonitor:
    """Evaluates :class:`HealthThresholds` against one database. Loop thread only."""

    def __init__(self, db: EngineState, thresholds: HealthThresholds | None = None) -> None:
        self.db = db
        self.thresholds = thresholds or HealthThresholds()
        memory = self.thresholds.memory_max_bytes
        self.memory_max_bytes = memory if memory > 0 else int(memory_limit_bytes() * 0.9)
        self.active: dict[str, Alert] = {}

    def alerts(self) -> list[Alert]:
        """The alerts that hold now (no logging, no state change)."""
        db, limits = self.db, self.thresholds
        out: list[Alert] = []
        if not db.ready:
            out.append(Alert("not_ready", "critical", "the database is not open (starting or stopping)", 0, 1))
        age = max(0.0, time.time() - db.last_checkpoint)
        severity = _graded(age, limits.checkpoint_max_age_s)
        if severity:
            out.append(Alert("checkpoint_too_old", severity,
                             f"last checkpoint {age:.0f}s ago (threshold {limits.checkpoint_max_age_s:.0f}s)",
                             round(age, 3), limits.checkpoint_max_age_s))
        wal = db.wal_bytes
        severity = _graded(wal, limits.wal_max_bytes)
        if severity:
            out.append(Alert("wal_too_large", severity,
                             f"write-ahead log holds {wal} bytes (threshold {limits.wal_max_bytes})",
                             wal, limits.wal_max_bytes))
        storage = db.storage
        if not storage.reachable:
            out.append(Alert("storage_unreachable", "critical",
                             f"storage backend ({storage.mode}) does not answer: {storage.last_error or 'no detail'}",
                             0, 1))
        failures = storage.consecutive_failures
        if failures and limits.storage_max_failures > 0:
            severity = "critical" if failures >= limits.storage_max_failures else "warning"
            out.append(Alert("storage_failing", severity,
                             f"{failures} checkpoints in a row failed: {storage.last_error or 'no detail'}",
                             failures, limits.storage_max_failures))
        if storage.wal_failed is not None:
            out.append(Alert("wal_failed", "critical", storage.reason or "the write-ahead log failed", 1, 0))
        elif storage.write_error is not None:
            out.append(Alert("wal_write_failing", "warning", f"last write failed: {storage.write_error}", 1, 0))
        if storage.corrupt_blobs:
            out.append(Alert("blob_corrupt", "critical",
                             f"{len(storage.corrupt_blobs)} blob(s) do not match their content address "
                             "(restore from a backup if the data needs them)", len(storage.corrupt_blobs), 0))
        rss = resident_memory_bytes()
        if self.memory_max_bytes > 0 and rss > self.memory_max_bytes:
            severity = "critical" if rss > self.memory_max_bytes * 1.1 else "warning"
            out.append(Alert("memory_high", severity,
                             f"resident memory {rss} bytes (threshold {self.memory_max_bytes})",
                             rss, self.memory_max_bytes))
        return out

    def check(self) -> list[Alert]:
        """The alerts that hold now; logs each alert raised, changed or cleared since the last check."""
        current = {a.alert: a for a in self.alerts()}
        for name, alert in current.items():
            before = self.active.get(name)
            if before is None or before.severity != alert.severity:
                log.warning("health alert %s (%s): %s", name, alert.severity, alert.message)
        for name in self.active.keys() - current.keys():
            log.info("health alert %s cleared", name)
        self.active = current
        return list(current.values())

    def report(self) -> dict[str, Any]:
        """The admin health report: overall status, each check's value and threshold, alerts."""
        alerts = self.check()
        db, limits = self.db, self.thresholds
        severities = {a.severity for a in alerts}
        status = "critical" if "critical" in severities else "warning" if severities else "ok"
        return {
            "status": status,
            "checked_at": time.time(),
            "checks": {
                "ready": {"value": db.ready},
                "checkpoint_age_s": {"value": round(max(0.0, time.time() - db.last_checkpoint), 3),
                                     "threshold": limits.checkpoint_max_age_s},
                "wal_bytes": {"value": db.wal_bytes, "threshold": limits.wal_max_bytes},
                "memory_bytes": {"value": resident_memory_bytes(), "threshold": self.memory_max_bytes},
                "storage": {**db.storage.as_dict(), "threshold_failures": limits.storage_max_failures},
            },
            "alerts": [a.as_dict() for a in alerts],
        }
