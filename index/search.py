"""The search contract of a collection: what to search for (:class:`SearchSpec`, built once
per request) and what came back (:class:`SearchResult`: the hits, whether a deadline cut
the historical tier short, and how long each tier took)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import msgspec

MERGES: Final = ("take_best", "average", "weighted")
H = TypeVar("H")


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchSpec:
    """How to search; every field has the default of a plain top-10 query.

    ``ef`` / ``nprobe`` / ``rerank`` (historical candidates re-ranked exactly): None takes
    the calibrated value, else the collection's. ``filter``: a
    metadata filter (checked against the limits where it came in). ``deadline``
    (time.monotonic): segments not started by then are skipped and the result is
    ``partial``. ``merge`` / ``weights``: how the tiers' hits combine (see
    :func:`s5vec.index.scoring.merge`). ``num_threads``: hnswlib threads for a batch."""

    k: int = 10
    ef: int | None = None
    filter: Mapping[str, Any] | None = None
    score_threshold: float | None = None
    include_metadata: bool = True
    include_vector: bool = False
    nprobe: int | None = None
    rerank: int | None = None
    recent: bool = True
    historical: bool = True
    deadline: float | None = None
    merge: str = "take_best"
    weights: Sequence[float] | None = None
    num_threads: int = 1


class SearchResult(msgspec.Struct, Generic[H], frozen=True, gc=False):
    """``hits``: best first, a list for one query or a list per query for a batch.
    ``partial``: a deadline skipped some segments. ``seconds``: wall time per tier
    searched ("recent", "historical"). A msgspec Struct like :class:`Hit`: one is built
    per search, in a sixth of a frozen dataclass's time (0.19 vs 1.1 us)."""

    hits: H
    partial: bool = False
    seconds: Mapping[str, float] = {}
