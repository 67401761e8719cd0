"""The indexer of the engine: drains acknowledged vectors from each collection's exact buffer
into its HNSW graph in the background, at lowered CPU priority, and gives freed heap memory
back after a burst. A part of :class:`Database` (see engine/database.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final, TypeVar

import numpy as np

from .memory import release_free_memory

T = TypeVar("T")
log = logging.getLogger(__name__)
TRIM_AFTER_INDEXED: Final = 20_000
"""The indexer gives freed heap memory back (malloc_trim) when it goes idle after this many
labels: often enough after an ingest burst, rare enough to cost nothing (~10 ms a time)."""


class Indexing:
    """The background indexer (mixed into :class:`~s5vec.engine.database.Database`)."""

    _round_waiters: list[asyncio.Future[None]] | None = None
    """Callers of :meth:`index_round` the next round answers (None when nobody asked)."""

    def _total_pending(self) -> int:
        return sum(c.pending for c in self.collections.values())

    def _graph_backlog(self) -> int:
        """Pending vectors bound for a graph: records already older than their collection's
        recent threshold are left out (the drain parks them at no cost, and migration takes
        them pending or parked), so a bulk load of old records is not held to the speed of
        graph construction. What the writer's ``max_pending`` bounds."""
        now = time.time()
        total = 0
        for coll in list(self.collections.values()):
            recent = coll.recent
            start, end = recent.hnsw_upto, recent.next
            if end > start:
                total += int(np.count_nonzero(recent.timestamps[start:end] >= now - coll.config.recent_threshold_s))
        return total

    async def _indexer(self) -> None:
        linger = self.config.index_linger_s
        since_trim = 0  # labels drained since free heap memory was last given back
        while True:
            await self._pending_changed.wait()
            self._pending_changed.clear()
            waiters, self._round_waiters = self._round_waiters, None
            if linger > 0 and self._total_pending() < self.config.drain_batch:
                # let a trickle of single-record writes gather: one graph batch (and one
                # thread hop) per linger instead of one per write; until then the exact
                # buffer serves them to searches
                await asyncio.sleep(linger)
            while True:
                busy = [c for c in list(self.collections.values()) if c.pending]
                if not busy:
                    break
                for coll in busy:
                    since_trim += await self._run(self._index_pool, coll.drain, self.config.drain_batch,
                                                  self.config.index_threads, None, self.config.graph_chunk)
                    self._drained.set()
            self._drained.set()
            if since_trim >= TRIM_AFTER_INDEXED:
                # An ingest burst leaves the request bodies' freed floats and lists in
                # glibc's arenas: give them back once the backlog is gone (100k MiniLM
                # over HTTP: 480 -> 461 MiB RSS after indexing).
                since_trim = 0
                await self._run(self._index_pool, release_free_memory)
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(None)

    async def index_round(self, timeout: float = 60.0) -> None:
        """Wait until the indexer has run one whole round (drain everything pending, then give
        memory back if due) that began after this call: the point after which a test can
        assert what the indexer did, and did not do, with what was written before the call."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._round_waiters is None:
            self._round_waiters = []
        self._round_waiters.append(waiter)
        self._pending_changed.set()  # the round starts even with nothing pending
        async with asyncio.timeout(timeout):
            await waiter

    async def wait_indexed(self, timeout: float = 600.0) -> None:
        """Wait until every acknowledged vector is in its HNSW graph."""
        async with asyncio.timeout(timeout):
            while self._total_pending():
                self._drained.clear()
                await self._drained.wait()
