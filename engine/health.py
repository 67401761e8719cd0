"""Storage health: where blobs go, whether that backend answers, how checkpoints fare.

The database owns one :class:`StorageHealth`; the checkpointer, the backend probe, the
writer (WAL failures) and the scrub (corrupt blobs) update it, ``/health`` and the
statistics route read it. Each ``record_*`` method says whether the state changed, so
callers log once per change instead of once per retry.

``status`` is "failing" once the write-ahead log has failed (writes are refused until a
restart), "degraded" while the backend does not answer, checkpoints fail, the last WAL
write failed or a blob is known to be corrupt, else "ok"; ``reason`` says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

_ERROR_CHARS: Final = 240


@runtime_checkable
class Probe(Protocol):
    """A backend that can say cheaply whether it answers (remote stores do; a directory does not)."""

    async def ping(self) -> bool: ...


def error_summary(exc: BaseException) -> str:
    """A short, single-line description of a storage failure for health output.

    Storage errors name the backend by its public URL only (no user info, query or token);
    this keeps the class name and truncates the text."""
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"[:_ERROR_CHARS]


@dataclass(slots=True)
class StorageHealth:
    """Mutable health of the blob backend; touched only on the event loop."""

    mode: str = "local"
    reachable: bool = True
    last_error: str | None = None
    consecutive_failures: int = 0
    failures_total: int = 0
    last_checkpoint_ok: float | None = None  # unix time of the last checkpoint that moved or kept the root
    last_probe: float | None = None
    wal_failed: str | None = None  # set once the WAL refuses writes (until restart)
    write_error: str | None = None  # the last WAL write failure, cleared by the next write that lands
    write_errors_total: int = 0
    corrupt_blobs: set[str] = field(default_factory=set)  # found by a read or the scrub, until found intact

    @property
    def degraded(self) -> bool:
        """True while the backend does not answer, the last checkpoint or WAL write failed,
        the WAL refuses writes, or a blob is known to be corrupt."""
        return (not self.reachable or self.consecutive_failures > 0 or self.wal_failed is not None
                or self.write_error is not None or bool(self.corrupt_blobs))

    @property
    def status(self) -> str:
        """ "failing", "degraded" or "ok" (see the module docstring)."""
        return "failing" if self.wal_failed is not None else "degraded" if self.degraded else "ok"

    @property
    def reason(self) -> str | None:
        """Why the status is not "ok", in one line (None when it is)."""
        if self.wal_failed is not None:
            return f"write-ahead log failed, writes refused until restart: {self.wal_failed}"
        if self.write_error is not None:
            return f"last write failed: {self.write_error}"
        if not self.reachable:
            return "storage backend does not answer"
        if self.consecutive_failures:
            return f"{self.consecutive_failures} checkpoint(s) failed in a row: {self.last_error}"
        if self.corrupt_blobs:
            return f"{len(self.corrupt_blobs)} blob(s) do not match their content address"
        return None

    def record_write_error(self, exc: BaseException, wal_failed: str | None = None) -> bool:
        """A WAL append failed (nothing acknowledged); ``wal_failed`` when the log now refuses
        writes. True if this starts a failing spell."""
        started = self.write_error is None and self.wal_failed is None
        self.write_errors_total += 1
        self.write_error = error_summary(exc)
        if wal_failed is not None:
            self.wal_failed = wal_failed
        return started

    def record_write_ok(self) -> bool:
        """A WAL append landed; True if it ends a failing spell."""
        ended = self.write_error is not None
        self.write_error = None
        return ended

    def record_corrupt(self, blob: str) -> bool:
        """A read found ``blob`` damaged; True the first time."""
        new = blob not in self.corrupt_blobs
        self.corrupt_blobs.add(blob)
        return new

    def record_intact(self, blob: str) -> None:
        """A read found ``blob`` intact (repaired or restored)."""
        self.corrupt_blobs.discard(blob)

    def record_failure(self, exc: BaseException) -> bool:
        """A checkpoint failed; True if this starts a failing streak."""
        self.consecutive_failures += 1
        self.failures_total += 1
        self.last_error = error_summary(exc)
        return self.consecutive_failures == 1

    def record_success(self, when: float | None = None) -> bool:
        """A checkpoint succeeded; True if it ends a failing streak or an unreachable spell."""
        ended = not self.reachable or self.consecutive_failures > 0
        self.consecutive_failures = 0
        self.reachable = True
        self.last_checkpoint_ok = time.time() if when is None else when
        return ended

    def record_probe(self, ok: bool, exc: BaseException | None = None) -> bool:
        """A reachability probe answered ``ok``; True if reachability changed."""
        self.last_probe = time.time()
        changed = ok != self.reachable
        self.reachable = ok
        if not ok and exc is not None:
            self.last_error = error_summary(exc)
        return changed

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``/health``'s ``storage`` (and the hook for metrics gauges)."""
        return {"mode": self.mode, "reachable": self.reachable, "degraded": self.degraded,
                "consecutive_failures": self.consecutive_failures, "failures_total": self.failures_total,
                "last_error": self.last_error, "last_checkpoint_ok": self.last_checkpoint_ok,
                "last_probe": self.last_probe, "status": self.status, "reason": self.reason,
                "wal_failed": self.wal_failed, "write_errors_total": self.write_errors_total,
                "corrupt_blobs": sorted(self.corrupt_blobs)}
