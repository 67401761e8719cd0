"""Bulk loads of the engine: a validated batch of any size, logged as several WAL records
in one group commit and acknowledged once every one of them is durable and applied.

Records whose timestamp is already past the collection's recent threshold never enter
the HNSW graph: they are applied like any upsert (so replaying the WAL rebuilds exactly
this state), the indexer parks them instead of inserting them (see
:mod:`s5vec.index.recent`), and migration moves them into sealed IVF segments. A bulk
load does not let them pile up without bound: while more than ``BULK_MAX_WAITING_BYTES``
of vectors wait for migration in a collection, the next bulk write migrates first.
A part of :class:`Database` (see engine/database.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import numpy as np
from s5vec.index import Batch, Collection
from s5vec.index.bulk import historical_mask
from s5vec.storage import StorageError

from .errors import NotWriter, ReadOnlyDatabase
from .walrecords import Upsert
from .writes import _Op

log = logging.getLogger(__name__)
WAL_RECORD_BYTES: Final = 8 << 20
"""Vector bytes per WAL record of a bulk write (about 5,400 rows of 384-d): a large request
becomes several records, all logged in one group commit (one fsync)."""
BULK_MAX_WAITING_BYTES: Final = 4 << 30
"""Vectors (float32 bytes) of old records a collection's recent tier may hold, waiting for
migration, before a bulk write migrates first: 4 GiB is 2.8M rows of 384-d."""


def split_batch(batch: Batch, rows: int) -> list[Batch]:
    """``batch`` in consecutive parts of at most ``rows`` rows (views, no copies)."""
    if len(batch) <= rows:
        return [batch]
    return [Batch(batch.ids[a:a + rows], batch.vectors[a:a + rows], batch.metadata[a:a + rows],
                  batch.timestamps[a:a + rows]) for a in range(0, len(batch), rows)]


def waiting_rows(coll: Collection, cutoff: float) -> int:
    """Old records of ``coll``'s recent tier that wait for migration: parked ones, plus
    pending ones past ``cutoff`` (an estimate read without the lock: a bound, not a count)."""
    recent = coll.recent
    start, end = recent.hnsw_upto, recent.next
    pending_old = int(np.count_nonzero(recent.timestamps[start:end] < cutoff)) if end > start else 0
    return len(recent.parked) + pending_old


class BulkWrites:
    """Bulk upserts (mixed into :class:`~s5vec.engine.database.Database`)."""

    async def bulk_upsert(self, name: str, batch: Batch) -> dict[str, Any]:
        """Durably upsert a validated batch of any size: split into WAL records of about
        ``WAL_RECORD_BYTES``, queued together (one group commit, so one fsync when the
        writer takes them at once), acknowledged when all are logged and applied. Returns
        ``{"records", "historical", "wal_records"}``. Raises CollectionNotFound,
        StorageError (then a prefix of the WAL records may be stored: upserts are
        idempotent, retry the request)."""
        coll = self.collection(name)
        if not len(batch):
            return {"records": 0, "historical": 0, "wal_records": 0}
        historical = int(historical_mask(coll.config, batch.timestamps).sum())
        if historical:
            await self._make_room(name, coll)
        rows = max(1, WAL_RECORD_BYTES // (4 * coll.config.dimension))
        parts = split_batch(batch, rows)
        loop = asyncio.get_running_loop()
        ops = [_Op(Upsert(name, part.ids, part.vectors.tobytes(), part.metadata, part.timestamps.tobytes()),
                   loop.create_future(), batch=part) for part in parts]
        await self._submit_all(ops)
        return {"records": len(batch), "historical": historical, "wal_records": len(parts)}

    async def _submit_all(self, ops: list[_Op]) -> None:
        """Queue ``ops`` back to back (the writer takes up to a group's worth at once) and wait
        for every one; the first failure is raised after all have settled."""
        for op in ops:
            self._submit_check()
            self._queue.put_nowait(op)
        results = await asyncio.gather(*(asyncio.shield(op.future) for op in ops), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _submit_check(self) -> None:
        """The refusals of ``Writes._submit``, for ops queued without its per-op wait."""
        if self.read_only:
            raise ReadOnlyDatabase(f"{self.data_dir} is open read-only: writes go to the writer")
        if not self.ready:
            raise StorageError("database is not open for writes")
        reason = self.not_writer()
        if reason is not None:
            raise NotWriter(reason)

    async def _make_room(self, name: str, coll: Collection) -> None:
        """Migrate while ``coll`` holds more than BULK_MAX_WAITING_BYTES of old vectors."""
        limit = max(1, BULK_MAX_WAITING_BYTES // (4 * coll.config.dimension))
        cutoff = time.time() - coll.config.recent_threshold_s
        while waiting_rows(coll, cutoff) > limit and self.collections.get(name) is coll:
            log.info("bulk load: %d old records of %r wait for migration; migrating first",
                     waiting_rows(coll, cutoff), name)
            result = await self.migrate(self.config.migrate_max_records)
            if not result.get("moved"):
                break
