"""Maintenance of the engine: migration of old records into sealed IVF segments, graph
compaction, segment rebuilds and recall tuning; heavy work on the migrate pool, swapped in
under the collection's lock. A part of :class:`Database` (see engine/database.py);
:mod:`s5vec.ops.jobs` decides when."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from s5vec.index import (
    Collection,
)
from s5vec.index.segment import segment_file

from .errors import ReadOnlyDatabase
from .memory import release_free_memory

T = TypeVar("T")
log = logging.getLogger(__name__)


class Maintenance:
    """Migration, compaction, rebuilds, tuning (mixed into :class:`~s5vec.engine.database.Database`)."""

    async def tune(self, name: str, target: float | None, sample: int) -> dict[str, Any]:
        """Calibrate ``ef``, ``nprobe`` and re-rank depth of one collection for ``target``
        recall@10, by default its ``target_recall`` (CPU heavy; see Collection.calibrate)."""
        coll = self.collection(name)
        return await self._run(self._migrate_pool, coll.tune, target, sample)

    async def migrate(self, max_records: int | None = None, now: float | None = None) -> dict[str, Any]:
        """Move records older than each collection's recent threshold into sealed IVF
        segments (one per time window). Safe to run at any time; a crash midway leaves
        every record in the recent tier, as the last checkpoint and the WAL describe it."""
        if self.read_only:
            raise ReadOnlyDatabase(f"{self.data_dir} is open read-only: the writer runs maintenance")
        started = time.perf_counter()
        try:
            result = await self._migrate(max_records, now)
        except Exception:
            self.metrics.job_finished("migration", "failure", time.perf_counter() - started)
            raise
        self.metrics.job_finished("migration", "success" if result["moved"] else "skipped",
                                  time.perf_counter() - started)
        return result

    @property
    def migrating(self) -> bool:
        """Whether a migration is running now."""
        return self._migrate_lock.locked()

    async def _migrate(self, max_records: int | None = None, now: float | None = None) -> dict[str, Any]:
        limit = max_records or self.config.migrate_max_records
        async with self._migrate_lock:
            started = time.time()
            moved = 0
            segments = 0
            announced = False
            for name, coll in list(self.collections.items()):
                plan = await self._run(self._read_pool, coll.plan_migration, now, limit)
                if plan is None:
                    continue
                if not announced:
                    self.events.publish_job("migration_started", {"started": started})
                    announced = True
                built = await self._run(self._migrate_pool, coll.build_migration, plan, self._segment_dir)
                if self.collections.get(name) is not coll:  # dropped meanwhile
                    for segment in built:
                        segment.close()
                    continue
                moved += await self._run(self._io, coll.commit_migration, plan, built)
                segments += len(built)
                await self._calibrate_if_due(coll)
                if coll.needs_compaction:
                    await self._run(self._migrate_pool, coll.compact, self.config.index_threads)
                    await self._run(self._migrate_pool, release_free_memory)
            elapsed = time.time() - started
            self.last_migration = {"moved": moved, "segments": segments, "seconds": round(elapsed, 3),
                                   "finished": time.time()}
            if moved:
                log.info("migrated %d records into %d segments in %.2fs", moved, segments, elapsed)
                self._pending_changed.set()
            if announced:
                self.events.publish_job("migration_completed", dict(self.last_migration))
            return self.last_migration

    async def _calibrate_if_due(self, coll: Collection) -> None:
        """Re-measure the collection's search settings when they no longer describe it (a
        new shared codebook, 25 % more historical rows, a graph twice as large)."""
        if coll.calibration_due:
            started = time.perf_counter()
            result = await self._run(self._migrate_pool, coll.calibrate)
            log.info("calibrated %s for recall %.2f in %.1fs: ef %s, nprobe %s, rerank %s, recall %s%s",
                     coll.config.name, result["target"], time.perf_counter() - started, result.get("ef"),
                     result.get("nprobe"), result.get("rerank"), result.get("recall"),
                     "" if result["met"] is not False else " (target not met: the most accurate setting tried is kept)")

    async def retrain_codebooks(self) -> list[str]:
        """Train a new shared codebook for every collection whose historical rows outgrew
        theirs (or that has none yet over enough rows); returns their names. The segments
        of the old one are rebuilt by the rebalance job (Collection.stale_segments)."""
        if self.read_only:
            raise ReadOnlyDatabase(f"{self.data_dir} is open read-only: the writer runs maintenance")
        retrained = []
        async with self._migrate_lock:
            for name, coll in list(self.collections.items()):
                if coll.codebook_due and await self._run(self._migrate_pool, coll.retrain_codebook):
                    log.info("trained a shared codebook for %s: %d lists for %d rows", name,
                             coll.coarse.nlist if coll.coarse else 0, coll.codebook_rows)
                    retrained.append(name)
        return retrained

    async def compact(self, tombstone_ratio: float) -> list[str]:
        """Rebuild the recent tier (HNSW graph) of every collection whose tombstones reach
        ``tombstone_ratio`` of its labels, off-lock (see Collection.compact); returns their names."""
        if self.read_only:
            raise ReadOnlyDatabase(f"{self.data_dir} is open read-only: the writer runs maintenance")
        compacted = []
        async with self._migrate_lock:
            for name, coll in list(self.collections.items()):
                if await self._run(self._migrate_pool, coll.compact, self.config.index_threads, tombstone_ratio):
                    compacted.append(name)
            if compacted:
                await self._run(self._migrate_pool, release_free_memory)
        return compacted

    async def rebuild_segments(self, choose: Callable[[Collection], Sequence[int | Sequence[int]]],
                               stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Re-train the sealed segments ``choose`` picks (by seq, or a list of seqs to merge
        into one; called on a worker thread per collection) from their live rows: built
        with no lock held, swapped in under the collection's write lock while no checkpoint
        is storing. ``stop`` is asked between segments. Returns how many segments were
        rebuilt, merged away and removed (no live rows left)."""
        if self.read_only:
            raise ReadOnlyDatabase(f"{self.data_dir} is open read-only: the writer runs maintenance")
        rebuilt = removed = merged = 0
        started = time.time()
        async with self._migrate_lock:
            for name, coll in list(self.collections.items()):
                for pick in await self._run(self._read_pool, choose, coll):
                    if (stop is not None and stop()) or self.collections.get(name) is not coll:
                        break
                    plan = await self._run(self._read_pool, coll.plan_rebuild, pick)
                    if plan is None:
                        continue
                    seqs = [source.segment.seq for source in plan.sources]
                    built = await self._run(self._migrate_pool, coll.build_rebuild, plan, self._segment_dir)
                    async with self._checkpoint_lock:  # no checkpoint reads the old segments now
                        swapped = (self.collections.get(name) is coll
                                   and await self._run(self._io, coll.commit_rebuild, plan, built))
                    gone = [source.segment for source in plan.sources] if swapped else [built]
                    for segment in gone:
                        if segment is not None:
                            # on the migrate thread: after any tune() still reading the old segment
                            await self._run(self._migrate_pool, segment.close)
                            segment_file(self._segment_dir, name, segment.seq).unlink(missing_ok=True)
                    if swapped:
                        for seq in seqs:
                            self._segment_refs.frozen.pop((name, seq), None)
                            for key in [k for k in self._segment_refs.mutable if k[:2] == (name, seq)]:
                                del self._segment_refs.mutable[key]
                        rebuilt += built is not None
                        removed += built is None
                        merged += len(seqs) - 1 if built is not None else 0
                if self.collections.get(name) is coll:
                    await self._calibrate_if_due(coll)
        if rebuilt or removed:
            log.info("rebuilt %d segments (%d merged into others), removed %d empty ones in %.2fs",
                     rebuilt, merged, removed, time.time() - started)
        return {"rebuilt": rebuilt, "merged": merged, "removed": removed, "seconds": round(time.time() - started, 3)}
