"""Storage health: where blobs go, whether that backend answers, how checkpoints fare.

The database owns one :class:`StorageHealth`; the checkpointer and the backend probe
update it, ``/health`` and the statistics route read it. Each ``record_*`` method says
whether the state changed, so callers log once per change instead of once per retry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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

    @property
    def degraded(self) -> bool:
        """True while the backend does not answer or the last checkpoint failed."""
        return not self.reachable or self.consecutive_failures > 0

    def record_failure(self, exc: BaseException) -> bool:
        """A checkpoint failed; True if this starts a failing streak."""
        self.consecutive_failures += 1
        self.failures_total += 1
        self.last_error = error_summary(exc)
        return self.consecutive_failures == 1

    def record_success(self, when: float | None = None) -> bool:
        """A checkpoint succeeded; True if it ends a failing streak or an unreachable spell."""
        ended = self.degraded
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
                "last_probe": self.last_probe}
