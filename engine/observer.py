"""What the engine reports while it works, as a protocol: the daemon passes its Prometheus
metrics (:class:`s5vec.ops.metrics.Metrics` satisfies it), a test or a tool passes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class EngineMetrics(Protocol):
    """Search timings per tier and finished runs of the engine's own jobs."""

    def observe_search(self, tiers: Mapping[str, float], queries: int = 1, partial: bool = False) -> None: ...

    def job_finished(self, job: str, outcome: str, seconds: float, when: float | None = None) -> None: ...


class NullMetrics:
    """Records nothing."""

    def observe_search(self, tiers: Mapping[str, float], queries: int = 1, partial: bool = False) -> None:
        pass

    def job_finished(self, job: str, outcome: str, seconds: float, when: float | None = None) -> None:
        pass
