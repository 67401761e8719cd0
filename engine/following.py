"""A follower: the engine without its writer, loaded from the published root and kept
current by tailing the writer's shipped WAL (see :mod:`.shipping`).

:meth:`Follower.open` opens a read-only :class:`~.database.Database` on its own data
directory over the writer's store (the root manifest and its blobs), then polls the
replication head every ``poll_interval_ms``: chunks past what it applied are fetched
(concurrently) and applied through the same one apply as the writer's and replay's, so
collections, LSNs and feed event ids are the writer's. Chunks it has seen are remembered,
so a checkpoint folding the head's chain does not strand it; a follower that missed
records no chunk it knows holds (it was stopped across a checkpoint and garbage
collection) is *stale* until restarted from the newer root.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from s5vec.storage import BlobId, BlobStore, HeadPointer, StorageError, WalCorrupt, fsync_dir
from s5vec.storage.datadir import DataDir

from .config import EngineConfig, ReplicationConfig
from .database import Database
from .events import EventBus
from .executors import Executors
from .observer import EngineMetrics
from .shipping import Chunk, ChunkRef, decode_chunk

log = logging.getLogger(__name__)


def _set_aside_local_wal(data_dir: Path) -> None:
    """A follower applies only the shipped WAL: a WAL left in its directory (it was a writer
    before) is moved aside, never replayed over the writer's history."""
    wal = DataDir(data_dir).wal
    if wal.is_dir() and any(wal.iterdir()):
        aside = data_dir / f"wal-before-following-{int(time.time())}"
        log.warning("moving this directory's own WAL to %s: a follower applies only the shipped WAL", aside)
        wal.rename(aside)
        fsync_dir(data_dir)


class FollowerGap(WalCorrupt):
    """The shipped WAL the follower can reach does not continue from what it applied."""


class Follower:
    """Tails the shipped WAL into a read-only database. Create with :meth:`open`; run
    :meth:`run` as a task; :meth:`poll` is one round (tests, start-up)."""

    def __init__(self, db: Database, config: ReplicationConfig) -> None:
        if not isinstance(db.store, HeadPointer):
            raise StorageError(f"a follower needs a store with a replication head; {type(db.store).__name__} has none")
        self.db = db
        db.follower_stats = self.stats
        self.store: BlobStore = db.store
        self.config = config
        self.head: BlobId | None = None
        self.head_lsn = db.applied_lsn
        self.head_epoch = 0
        self.head_created = 0.0  # when the writer stored the newest chunk seen (its clock)
        self._known: dict[int, ChunkRef] = {}  # chunks seen in any head, by first LSN
        self.stale: str | None = None
        self.writer_url: str | None = None  # who writes, as leader election last said
        self.started = time.time()
        self.caught_up_at = 0.0  # last time a poll found everything in the head applied
        self.polls = 0
        self.poll_failures = 0
        self.last_error: str | None = None
        self.records_applied = 0
        self.chunks_fetched = 0

    @classmethod
    async def open(cls, data_dir: Path, config: EngineConfig, store: BlobStore, replication: ReplicationConfig, *,
                   events: EventBus | None = None, storage_mode: str = "local", metrics: EngineMetrics | None = None,
                   executors: Executors | None = None, attempts: int = 3) -> Follower:
        """Load the root manifest and catch up with the shipped WAL. A root that moved on
        while loading (a checkpoint folded the chain and its chunks were collected) is read
        again, up to ``attempts`` times. Raises FollowerGap, StorageError."""
        await asyncio.to_thread(_set_aside_local_wal, Path(data_dir))
        for attempt in range(1, attempts + 1):
            db = await Database.open(data_dir, config, store, events=events, storage_mode=storage_mode,
                                     metrics=metrics, executors=executors, read_only=True)
            follower = cls(db, replication)
            try:
                await follower.poll()
            except FollowerGap as exc:
                await db.close(checkpoint=False)
                if attempt == attempts:
                    raise
                log.info("the root moved on while this follower loaded it (%s); loading it again", exc)
                continue
            except BaseException:
                await db.close(checkpoint=False)
                raise
            return follower
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ state

    @property
    def lag_lsn(self) -> int:
        """Records in the newest head seen that are not applied here."""
        return max(0, self.head_lsn - self.db.applied_lsn)

    @property
    def lag_seconds(self) -> float:
        """Seconds since this follower last had everything the head named (since start
        before the first time)."""
        return time.time() - (self.caught_up_at or self.started)

    def stats(self) -> dict[str, Any]:
        return {"role": "follower", "applied_lsn": self.db.applied_lsn, "head_lsn": self.head_lsn,
                "head": str(self.head) if self.head else None, "epoch": self.head_epoch,
                "lag_lsn": self.lag_lsn, "lag_seconds": round(self.lag_seconds, 3), "stale": self.stale,
                "polls": self.polls, "poll_failures": self.poll_failures, "last_error": self.last_error,
                "records_applied": self.records_applied, "chunks_fetched": self.chunks_fetched}

    # ------------------------------------------------------------------ tailing

    async def run(self) -> None:
        """Poll every ``poll_interval_ms`` until cancelled; failures are counted and retried."""
        interval = self.config.poll_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            if self.stale:
                continue
            try:
                await self.poll()
            except FollowerGap as exc:
                self.stale = str(exc)
                log.error("follower is stale: %s; restart it to load the newer root", exc)
            except StorageError as exc:
                self.poll_failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.poll_failures == 1 or self.poll_failures % 100 == 0:
                    log.warning("follower cannot read the shipped WAL (%d failures): %s", self.poll_failures,
                                self.last_error)

    async def poll(self) -> int:
        """One round: read the head; fetch and apply what is new. Returns records applied.
        Raises FollowerGap, StorageError."""
        store = self.store
        assert isinstance(store, HeadPointer)
        head_id = await store.get_head()
        self.polls += 1
        if head_id is None or head_id == self.head:
            self._caught_up()
            return 0
        chunk = await self.db._cpu(decode_chunk, await self.store.get(head_id), head_id)
        if chunk.epoch < self.head_epoch:  # a deposed writer's late head: never apply it
            log.warning("ignoring replication head %s of epoch %d (epoch %d is current)", head_id, chunk.epoch,
                        self.head_epoch)
            return 0
        for ref in chunk.chain:
            self._remember(ref)
        applied = await self._apply_through(chunk, head_id)
        self.head, self.head_lsn, self.head_epoch, self.head_created = head_id, chunk.lsn, chunk.epoch, chunk.created
        self._caught_up()
        self.last_error = None
        return applied

    def _remember(self, ref: ChunkRef) -> None:
        if ref.last >= ref.first and ref.last > self.db.applied_lsn:
            self._known[ref.first] = ref

    def _caught_up(self) -> None:
        if self.db.applied_lsn >= self.head_lsn:
            self.caught_up_at = time.time()

    async def _apply_through(self, chunk: Chunk, head_id: BlobId) -> int:
        """Apply every record up to the head chunk's last from chunks seen so far."""
        db = self.db
        start = db.applied_lsn + 1
        if chunk.lsn < start:
            return 0
        needed: list[ChunkRef] = []
        lsn = start
        while lsn < chunk.first:  # the head chunk itself holds chunk.first..chunk.last
            ref = next((r for first, r in self._known.items() if first <= lsn <= r.last), None)
            if ref is None:
                raise FollowerGap(f"the shipped WAL continues at LSN {chunk.first} (head {head_id}) but this "
                                  f"follower has LSN {start - 1} and no chunk it knows holds LSN {lsn}")
            needed.append(ref)
            lsn = ref.last + 1
        parts = await asyncio.gather(*(self._fetch(ref) for ref in needed))
        records: list[tuple[int, bytes]] = []
        for part in [*parts, chunk]:
            records += [(part.first + i, r) for i, r in enumerate(part.records) if part.first + i >= start]
        records.sort(key=lambda item: item[0])
        if records and records[0][0] != start:
            raise FollowerGap(f"the shipped WAL resumes at LSN {records[0][0]}, this follower has LSN {start - 1}")
        applied = await db.apply_shipped(records)
        self.records_applied += applied
        self._known = {first: ref for first, ref in self._known.items() if ref.last > db.applied_lsn}
        return applied

    async def _fetch(self, ref: ChunkRef) -> Chunk:
        chunk: Chunk = await self.db._cpu(decode_chunk, await self.store.get(ref.blob), ref.blob)
        if (chunk.first, chunk.last) != (ref.first, ref.last):
            raise WalCorrupt(f"WAL chunk {ref.blob} holds LSNs {chunk.first}..{chunk.last}, "
                             f"its chain says {ref.first}..{ref.last}")
        self.chunks_fetched += 1
        return chunk

    async def close(self) -> None:
        await self.db.close(checkpoint=False)
