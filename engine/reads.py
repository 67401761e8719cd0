"""Reads of the engine: the collection catalog, searches (coalesced into batches when they
are plain) with their time limit, and reads by id or filter. A part of :class:`Database`
(see engine/database.py); runs on the event loop and hands the work to the read, get and
tier pools."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from s5vec.index import (
    Collection,
    CollectionNotFound,
    Hit,
    RecordNotFound,
    scoring,
)
from s5vec.index.errors import SearchTimeout
from s5vec.index.filters import check_filter_size, check_time, time_limit
from s5vec.index.scoring import ScoringSpec
from s5vec.index.search import SearchSpec
from s5vec.storage import (
    StorageError,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Query(SearchSpec):
    """An engine search: the index's :class:`~s5vec.index.search.SearchSpec` (k, per-tier
    knobs, filter, what to return) plus a time budget, ``timeout_ms``, which becomes the
    spec's deadline when the search starts, and an optional ``scoring`` re-rank."""

    timeout_ms: float | None = None
    scoring: ScoringSpec | None = None


class Reads:
    """Searches and reads (mixed into :class:`~s5vec.engine.database.Database`)."""

    def collection_items(self) -> list[tuple[str, Collection]]:
        """The collections as ``(name, collection)`` pairs, one consistent snapshot; safe on
        any thread while the writer creates and drops collections. A collection in it may be
        dropped by the time it is used (it then holds its last state). Sorted by name, so
        every listing has one order whatever the creation or recovery order was."""
        return sorted(self.collections.items())

    def collection(self, name: str) -> Collection:
        """The live collection called ``name``; raises CollectionNotFound."""
        try:
            return self.collections[name]
        except KeyError:
            raise CollectionNotFound(f"collection {name!r} does not exist") from None

    async def search(self, name: str, query: np.ndarray, q: Query) -> tuple[list[Hit], bool]:
        """Top-``q.k`` of one collection and whether the result is partial (timeout).

        Concurrent plain searches are coalesced into one graph call per group (fewer
        thread hand-offs; hnswlib parallelises the batch without the GIL).
        Raises InvalidFilter (over ``filter_max_*``), SearchTimeout (past ``search_timeout_s``)."""
        coll = self.collection(name)
        if q.filter is not None:
            check_filter_size(q.filter, self.config.filter_limits)
        plain = (q.filter is None and q.timeout_ms is None and q.merge == "take_best" and q.scoring is None
                 and self.config.search_batches > 0 and bool(self._tasks))
        if not plain:
            return await self._limited(self._search_one, coll, query, q)
        future: asyncio.Future[list[Hit]] = asyncio.get_running_loop().create_future()
        key = (name, q.k, q.ef, q.nprobe, q.rerank, q.include_metadata, q.include_vector, q.recent, q.historical)
        self._searches.append((key, query, q.score_threshold, future))
        self._search_wakeup.set()
        timer = asyncio.timeout(self.config.search_timeout_s)
        try:
            async with timer:
                return await future, False
        except TimeoutError:
            if timer.expired():
                raise self._timed_out() from None
            raise

    async def _limited(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the read pool within ``search_timeout_s``: past it the worker stops
        at its next :func:`check_time` (filter evaluation looks every few hundred records) and
        the caller gets SearchTimeout at once, so neither a client nor shutdown waits longer."""
        limit = self.config.search_timeout_s
        deadline = time.monotonic() + limit

        def run() -> T:
            with time_limit(deadline):
                check_time()  # queued behind other searches until past its time: not started at all
                return fn(*args)

        timer = asyncio.timeout(limit)
        try:
            async with timer:
                return await self._run(self._read_pool, run)
        except SearchTimeout:
            raise self._timed_out() from None
        except TimeoutError:
            if timer.expired():
                raise self._timed_out() from None
            raise

    def _timed_out(self) -> SearchTimeout:
        return SearchTimeout(f"the search did not finish within engine.search_timeout_s = "
                             f"{self.config.search_timeout_s:g} s and was cancelled; narrow the filter "
                             "or raise the limit")

    def _search_one(self, coll: Collection, query: np.ndarray, q: Query) -> tuple[list[Hit], bool]:
        """Worker thread: search, then the scoring re-rank over a wider candidate set."""
        deadline = time.monotonic() + q.timeout_ms / 1000.0 if q.timeout_ms else None
        spec = q if deadline is None and q.scoring is None else dataclasses.replace(
            q, deadline=deadline, k=scoring.candidate_count(q.k) if q.scoring is not None else q.k,
            score_threshold=None if q.scoring is not None else q.score_threshold,
            include_metadata=q.include_metadata or q.scoring is not None)
        result = coll.search(query, spec, executor=self._tier_pool)
        hits = result.hits
        if q.scoring is not None:
            hits = scoring.rerank(hits, q.scoring, time.time(), q.k)
            if q.score_threshold is not None:
                hits = [h for h in hits if h.score >= q.score_threshold]
        self.metrics.observe_search(result.seconds, 1, result.partial)
        return hits, result.partial

    async def _search_dispatcher(self) -> None:
        inflight: set[asyncio.Task[None]] = set()
        limit = max(1, self.config.search_batches)
        try:
            while True:
                await self._search_wakeup.wait()
                self._search_wakeup.clear()
                while self._searches:
                    if len(inflight) >= limit:
                        _, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    waiting, self._searches = self._searches, []
                    groups: dict[tuple[Any, ...], list[Any]] = {}
                    for item in waiting:
                        groups.setdefault(item[0], []).append(item)
                    # A group is split over the free slots: one batch of 8 on one thread took
                    # 3.4 ms (MiniLM 100k, ef 64) while the other core idled, and every
                    # client waited for the whole batch.
                    share = max(1, (limit - len(inflight)) // len(groups))
                    for key, items in groups.items():
                        for part in _split(items, share):
                            inflight.add(asyncio.create_task(self._search_group(key, part)))
        except asyncio.CancelledError:
            for task in inflight:
                task.cancel()
            raise

    async def _search_group(self, key: tuple[Any, ...], items: list[Any]) -> None:
        name, k, ef, nprobe, rerank, include_metadata, include_vector, recent, historical = key
        try:
            coll = self.collection(name)
            queries = np.stack([item[1] for item in items]) if len(items) > 1 else items[0][1][None, :]
            threads = max(1, self.config.index_threads // max(1, self.config.search_batches))
            spec = SearchSpec(k=k, ef=ef, include_metadata=include_metadata, include_vector=include_vector,
                              nprobe=nprobe, rerank=rerank, recent=recent, historical=historical,
                              num_threads=threads)
            result = await self._run(self._read_pool, functools.partial(coll.search_batch, queries, spec,
                                                                        executor=self._tier_pool))
            results = result.hits
            self.metrics.observe_search(result.seconds, len(items))
        except BaseException as exc:
            for item in items:
                if not item[3].done():
                    item[3].set_exception(exc if isinstance(exc, Exception) else StorageError("search cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, threshold, future), hits in zip(items, results):
            if threshold is not None:
                hits = [h for h in hits if h.score >= threshold]
            if not future.done():
                future.set_result(hits)

    async def stats(self, name: str | None = None) -> list[dict[str, Any]]:
        """Statistics of collection ``name`` (CollectionNotFound), or of every collection, read
        on a worker thread (they walk the segments)."""
        items = [(name, self.collection(name))] if name is not None else self.collection_items()
        return await self._run(self._get_pool, lambda: [coll.stats() for _, coll in items])

    async def get(self, name: str, record_id: str, include_vector: bool = True) -> Hit:
        # on a worker: a lazily loaded segment may have to fetch its blobs first
        return await self._run(self._get_pool, self.collection(name).get, record_id, include_vector)

    async def ids_after(self, name: str, after: str | None = None) -> list[str]:
        """Every live id of a collection in id order, after ``after`` (see Collection.ids_after)."""
        return await self._run(self._read_pool, self.collection(name).ids_after, after)

    async def get_many(self, name: str, ids: Sequence[str], include_vector: bool = True) -> list[Hit]:
        """The live records among ``ids``, in that order (absent ones skipped)."""
        return await self._run(self._get_pool, self.collection(name).get_many, ids, include_vector)

    async def find(self, name: str, spec: dict[str, Any] | None, limit: int, offset: int = 0,
                   include_vector: bool = False) -> tuple[int, list[Hit]]:
        """Records whose metadata matches ``spec`` (every record when None or empty), in storage
        order: how many match, and the hits from ``offset``, at most ``limit``.
        Raises CollectionNotFound, InvalidFilter, SearchTimeout (as :meth:`search`)."""
        coll = self.collection(name)
        if spec:
            check_filter_size(spec, self.config.filter_limits)

        def run() -> tuple[int, list[Hit]]:
            ids = coll.ids_matching(spec or {})
            hits: list[Hit] = []
            for record_id in ids[offset:offset + limit]:
                try:
                    hits.append(coll.get(record_id, include_vector))
                except RecordNotFound:  # deleted between the two reads
                    continue
            return len(ids), hits

        return await self._limited(run)


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in at most ``parts`` consecutive runs of near-equal size."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, at = [], 0
    for n in range(parts):
        step = size + (n < extra)
        out.append(items[at:at + step])
        at += step
    return out
