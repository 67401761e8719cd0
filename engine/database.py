"""The database engine: one data directory's collections, write-ahead log, single writer,
indexer, checkpoints and maintenance.

Writes go through one writer task (group commit: many requests, one fsync) so WAL
order is apply order; a write is acknowledged after its fsync and its apply.  The
indexer drains acknowledged vectors into HNSW in the background.  Checkpoints store
every collection as blobs plus a manifest, swing the root pointer, then drop WAL
segments the manifest covers.  Restart = load the manifest + replay the WAL.

:class:`Database` is assembled from one part per concern, each in its own module over the
state this module's ``__init__`` sets up: :class:`~.reads.Reads` (catalog, searches, reads),
:class:`~.writes.Writes` (write API, group commit, the one apply), :class:`~.indexer.Indexing`,
:class:`~.checkpoint.Checkpointing`, :class:`~.maintenance.Maintenance` and
:class:`~.bulk.BulkWrites` (bulk loads). The pools are one
:class:`~.executors.Executors`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from s5vec.index import (
    Collection,
)
from s5vec.storage import (
    BackendUnavailable,
    BlobId,
    BlobStore,
    LocalBlobStore,
    StorageError,
    WalCorrupt,
    WriteAheadLog,
    fsync_dir,
)
from s5vec.storage.blobstore import os_failure
from s5vec.storage.datadir import DataDir, lock_directory, unlock_directory

from .backups import BackupCatalog
from .bulk import BulkWrites
from .checkpoint import Checkpointing
from .config import EngineConfig, ReplicationConfig
from .embedding import Embedder
from .errors import NotWriter, ReadOnlyDatabase
from .events import Change, EventBus
from .executors import Executors
from .health import StorageHealth
from .indexer import Indexing
from .maintenance import Maintenance
from .manifest import (
    SegmentRefs,
    read_collection,
    read_manifest,
)
from .observer import EngineMetrics, NullMetrics
from .reads import Query, Reads, _split
from .shipping import WalShipper, read_head, shipped_records
from .walrecords import (
    decode_record,
)
from .writes import MetaPatch, Writes, _Op

T = TypeVar("T")
log = logging.getLogger(__name__)
__all__ = ["Database", "EngineConfig", "MetaPatch", "Query", "ReadOnlyDatabase", "_split"]


class Database(Reads, Writes, BulkWrites, Indexing, Checkpointing, Maintenance):
    """Everything one data directory holds. Create with :meth:`open`, end with :meth:`close`."""

    def __init__(self, data_dir: Path, config: EngineConfig, store: BlobStore | None = None,
                 events: EventBus | None = None, storage_mode: str = "local",
                 metrics: EngineMetrics | None = None, executors: Executors | None = None,
                 read_only: bool = False, replication: ReplicationConfig | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.layout = DataDir(self.data_dir)
        self.config = config
        self.read_only = read_only
        self.events = events or EventBus()
        self.metrics: EngineMetrics = metrics or NullMetrics()
        if read_only:  # scratch files of its own: the writer's tmp/ and segments/ are not ours to touch
            self._private_scratch: Path | None = Path(tempfile.mkdtemp(prefix="s5vec-reader-"))
            self._scratch = self._private_scratch / "tmp"
            self._segment_dir = self._private_scratch / "segments"
        else:
            self._private_scratch = None
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._scratch = self.layout.scratch
            self._segment_dir = self.layout.segments
        self._owns_executors = executors is None
        self.executors = executors or Executors.create(config.search_threads, config.background_nice)
        self._segment_refs = SegmentRefs()
        self._migrate_lock = asyncio.Lock()
        self._migrate_pool = self.executors.migrate
        self._tier_pool = self.executors.tier
        self.last_migration: dict[str, Any] = {}
        self._checkpoint_token: tuple[Any, ...] = ()
        self._io = self.executors.io
        self.store: BlobStore = store or LocalBlobStore(self.data_dir, self._io)
        self.backups = BackupCatalog(self.data_dir, self.store)
        self.gc_grace_s = 0.0  # a blob unreferenced for less than this is kept (see keep_unreferenced_for)
        self._unreferenced: dict[BlobId, float] = {}  # blob -> when garbage collection first found it unreferenced
        self.last_gc: dict[str, Any] = {}
        self.storage = StorageHealth(storage_mode)
        self._retry_at = 0.0
        self._next_probe = 0.0
        self._writer_pool = self.executors.writer
        self._index_pool = self.executors.index
        self._read_pool = self.executors.read
        # Reads by id get their own threads: long searches that fill the read pool must not
        # make a GET by id wait (issue 17: four filter bombs made one wait 40 s).
        self._get_pool = self.executors.get
        self.embedder = Embedder()  # text → vector for collections with an embedding_model
        self._wal = WriteAheadLog(self.layout.wal, config.wal_segment_bytes)
        # Copy-on-write once open: the writer thread publishes a new dict for a create or a
        # drop and never changes a published one, so readers on the event loop can iterate
        # the dict they hold while collections come and go (see collection_items).
        self.collections: dict[str, Collection] = {}
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._checkpoint_lock = asyncio.Lock()
        self._pending_changed = asyncio.Event()
        self._drained = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._searches: list[Any] = []
        self._search_wakeup = asyncio.Event()
        self._lock_fd: int | None = None
        self.root: BlobId | None = None
        self.checkpoint_lsn = 0
        self.last_checkpoint = time.time()
        self.applied_lsn = 0
        self._lsn_moved = asyncio.Event()  # set (and replaced) whenever applied_lsn moves on
        self.replication = replication
        self._shipper: WalShipper | None = None  # ships the WAL when ``replication`` is given (a writer only)
        self.follower_stats: Callable[[], dict[str, Any]] | None = None  # set by a Follower tailing into this
        self.write_fence: Callable[[], str | None] = lambda: None  # leadership: why writes must stop now
        self.ready = False
        self.detached = False  # a restore replaced the directory's state: memory must never be checkpointed

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, data_dir: Path, config: EngineConfig | None = None,
                   store: BlobStore | None = None, events: EventBus | None = None,
                   storage_mode: str = "local", metrics: EngineMetrics | None = None,
                   executors: Executors | None = None, read_only: bool = False,
                   replication: ReplicationConfig | None = None,
                   fence: Callable[[], str | None] | None = None) -> Database:
        """Lock the directory, load the last checkpoint, replay the WAL, start workers.
        Replayed records are published to ``events`` (nobody listens yet: they fill its
        window, so feeds resume across a restart from the last checkpoint on).
        ``storage_mode`` only labels ``self.storage`` (the health of ``store``); ``metrics``
        receives search timings and job runs (nothing is recorded when None). The database runs
        no schedule of its own: periodic checkpoints, migrations and the rest are the jobs of
        :mod:`s5vec.ops.jobs`, which calls :meth:`checkpoint_due`, :meth:`checkpoint` and
        :meth:`migrate`. ``executors`` are the caller's to shut down (the database builds and
        shuts down its own when None).

        With ``read_only`` the database is a reader beside a writer (or over a copy): it takes
        no lock, deletes and writes nothing in the directory (scratch files go to a private
        temporary directory), reads the WAL up to its last complete record without cutting
        anything, and serves searches and reads; writes, checkpoints and maintenance raise
        ReadOnlyDatabase.

        With ``replication`` a writer ships its WAL through ``store`` (which then needs a
        replication head, see :mod:`.shipping`), and at open replays shipped records it does
        not have: a new data directory with only the phrase's store recovers every shipped write."""
        db = cls(data_dir, config or EngineConfig(), store, events, storage_mode, metrics, executors, read_only,
                 replication)
        if fence is not None:  # leader election: why this node may not acknowledge writes now
            db.write_fence = fence
        try:
            await db._open()
        except OSError as exc:  # name the file: "No space left on device" alone says nothing
            await db._release()
            where = f" ({exc.filename})" if exc.filename else ""
            raise os_failure(f"cannot open data directory {db.data_dir}{where}", exc) from exc
        except BaseException:
            await db._release()
            raise
        return db

    async def _open(self) -> None:
        if not self.read_only:
            self._lock_fd = lock_directory(self.data_dir)
            if isinstance(self.store, LocalBlobStore):  # left by a crash between write and rename
                await self._run(self._io, self.store.remove_stale_temporaries_sync)
            shutil.rmtree(self._scratch, ignore_errors=True)
            shutil.rmtree(self._segment_dir, ignore_errors=True)
        self._scratch.mkdir()
        self._segment_dir.mkdir()
        self.root = await self.store.get_root()
        if self.root is not None:
            manifest = await read_manifest(self.store, self.root)
            for name, entry in manifest["collections"].items():
                config, recent, segments, codebook = await read_collection(
                    self.store, entry, self._segment_dir, self._segment_refs, self.config.lazy_segments)
                self.collections[name] = await self._run(self._io, Collection.restore, config, recent,
                                                         segments, self._scratch, codebook)
            self.checkpoint_lsn = self.applied_lsn = int(manifest["lsn"])
            self._checkpoint_token = self._state_token()
        self.events.start_at(self.checkpoint_lsn)
        shipped = await self._open_shipping() if self.replication is not None and not self.read_only else []
        replayed = await self._run(self._writer_pool, self._replay, shipped)
        if self._shipper is not None and self._shipper._takeover:
            # a new epoch: publish a head stamped with it before acknowledging anything, so a
            # writer of an older epoch that is still running finds the head moved and stops
            if not await self._shipper.ship() and self._shipper.deposed:
                raise NotWriter(self._shipper.deposed)
        log.info("opened %s: %d collections, checkpoint LSN %d, %d WAL records replayed",
                 self.data_dir, len(self.collections), self.checkpoint_lsn, replayed)
        self._tasks = [asyncio.create_task(self._writer(), name="s5vec-writer")] if not self.read_only else []
        if self._shipper is not None:
            self._tasks.append(asyncio.create_task(self._shipper.run(), name="s5vec-shipper"))
        self._tasks += [asyncio.create_task(self._indexer(), name="s5vec-indexer"),
                        asyncio.create_task(self._search_dispatcher(), name="s5vec-search")]
        self._pending_changed.set()
        self.ready = True

    async def _open_shipping(self) -> list[tuple[int, bytes]]:
        """Start the shipper where the published chain ends; returns the shipped records
        after the checkpoint (replay skips those the local WAL has). A backend that does not
        answer leaves the records to the local WAL, and shipping starts a new chain."""
        assert self.replication is not None
        shipper = WalShipper(self.store, self.replication, self._cpu, self.replication.epoch, self.write_fence)
        try:
            head = await read_head(self.store, self._cpu)
            shipped = await shipped_records(self.store, head, self.checkpoint_lsn, self._cpu) if head else []
        except BackendUnavailable as exc:
            log.warning("cannot read the shipped WAL (%s); starting from the local WAL, shipping starts a new chain",
                        exc)
            shipper.start(self.root, self.checkpoint_lsn, None, known=False)
            self._shipper = shipper
            return []
        if shipped:
            await self._run(self._writer_pool, self._set_aside_diverged_wal, shipped)
        shipper.start(self.root, self.checkpoint_lsn, head)
        self._shipper = shipper
        return shipped

    def _lsn_advanced(self) -> None:
        moved, self._lsn_moved = self._lsn_moved, asyncio.Event()
        moved.set()

    async def wait_for_lsn(self, lsn: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything through ``lsn`` is applied here
        (read-your-writes on a follower); True once it is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.applied_lsn < lsn:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._lsn_moved.wait()
            except TimeoutError:
                return self.applied_lsn >= lsn
        return True

    async def apply_shipped(self, records: list[tuple[int, bytes]]) -> int:
        """Apply shipped WAL records (a follower's tail) through the one apply, publish their
        events with the writer's LSNs; returns how many were applied. Records at or below
        ``applied_lsn`` are skipped. Raises WalCorrupt when they do not follow it."""
        async with self._write_lock:
            count, changes = await self._run(self._writer_pool, self._apply_shipped, records)
        if count:
            self.events.publish(changes, self.applied_lsn)
            self._pending_changed.set()
            self._lsn_advanced()
        return count

    def _apply_shipped(self, records: list[tuple[int, bytes]]) -> tuple[int, list[Change]]:
        changes: list[Change] = []
        count = 0
        for lsn, payload in records:
            if lsn <= self.applied_lsn:
                continue
            if lsn != self.applied_lsn + 1:
                raise WalCorrupt(f"shipped WAL record {lsn} does not follow the applied LSN {self.applied_lsn}")
            self._apply_logged(lsn, payload, changes, "shipped WAL record")
            count += 1
        return count, changes

    def _apply_logged(self, lsn: int, payload: bytes, changes: list[Change], what: str) -> None:
        """Apply one logged record (replayed or shipped) and advance ``applied_lsn``; a
        CRC-valid record this state cannot take stops with WalCorrupt (nothing is skipped)."""
        record = decode_record(lsn, payload)
        try:
            self._apply_record(record, None, changes, lsn)
        except StorageError:
            raise
        except Exception as exc:
            raise WalCorrupt(f"{what} {lsn} ({record.__struct_config__.tag} on {record.c!r}) cannot be applied: "
                             f"{type(exc).__name__}: {exc}") from exc
        self.applied_lsn = lsn

    def _set_aside_diverged_wal(self, shipped: list[tuple[int, bytes]]) -> None:
        """Writer thread, at open: when the local WAL holds a record the shipped chain holds
        differently (this node wrote it as a writer that was since replaced, and it was never
        acknowledged), move the local WAL aside: the chain is the history."""
        theirs = dict(shipped)
        diverged = None
        try:
            for lsn, payload in WriteAheadLog(self.layout.wal).recover(self.checkpoint_lsn, repair=False):
                if lsn in theirs and theirs[lsn] != payload:
                    diverged = lsn
                    break
        except StorageError:
            return  # a damaged local WAL: replay reports it
        if diverged is None:
            return
        aside = self.data_dir / f"wal-diverged-{int(time.time())}"
        log.warning("the local WAL differs from the shipped WAL at LSN %d (another writer took over while this "
                    "node's last writes were unacknowledged); moving it to %s and following the shipped WAL",
                    diverged, aside)
        self._wal.close()
        self.layout.wal.rename(aside)
        fsync_dir(self.data_dir)
        self._wal = WriteAheadLog(self.layout.wal, self.config.wal_segment_bytes)

    async def _cpu(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._io, fn, *args)

    def _replay(self, shipped: list[tuple[int, bytes]] | None = None) -> int:
        count = 0
        changes: list[Change] = []
        shipper = self._shipper
        local = self._wal.recover(self.checkpoint_lsn, repair=not self.read_only)
        for lsn, payload in itertools.chain(local, self._adopt_shipped(shipped or [])):
            if shipper is not None and lsn > shipper.shipped_lsn:
                shipper.add([(lsn, payload)])
            self._apply_logged(lsn, payload, changes, "WAL record")
            count += 1
            if len(changes) >= 1024:  # the bus trims its window as it goes
                self.events.publish(changes)
                changes = []
        self.events.publish(changes, self.applied_lsn)
        return count

    def _adopt_shipped(self, shipped: list[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        """Writer thread, after the local WAL is read: the shipped records past its end,
        appended to it (so they are durable here and LSNs go on from them) and yielded.
        Raises WalCorrupt when they do not follow the local WAL's last record."""
        after = max(self.applied_lsn, self._wal.next_lsn - 1)
        missing = [(lsn, payload) for lsn, payload in shipped if lsn > after]
        if not missing:
            return
        if missing[0][0] != after + 1:
            raise WalCorrupt(f"the shipped WAL resumes at LSN {missing[0][0]} but the local state ends at {after}")
        log.info("adopting %d shipped WAL records (LSN %d..%d) this directory does not have",
                 len(missing), missing[0][0], missing[-1][0])
        for start in range(0, len(missing), 4096):
            part = missing[start:start + 4096]
            self._wal.append([payload for _, payload in part])
            yield from part

    async def close(self, checkpoint: bool = True) -> None:
        """Stop workers; with ``checkpoint`` the WAL is folded into a final manifest.

        The writer finishes the group it is committing (never cancelled mid-commit);
        writes queued behind it fail with StorageError and are not acknowledged.
        """
        self.ready = False
        writer, others = ([], self._tasks) if self.read_only else (self._tasks[:1], self._tasks[1:])
        self._tasks = []
        if writer:
            await self._queue.put(_Op(None, asyncio.get_running_loop().create_future()))
            await writer[0]
        for task in others:
            task.cancel()
        for task in others:
            try:
                await task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            op = self._queue.get_nowait()
            if not op.future.done():
                op.future.set_exception(StorageError("database is shutting down"))
        for *_, future in self._searches:
            if not future.done():
                future.set_exception(StorageError("database is shutting down"))
        self._searches = []
        await self._flush_shipping()
        if checkpoint and self._lock_fd is not None and not self.detached and not self.read_only:
            if self.storage.degraded and not await self.probe_storage():
                log.warning("storage backend unavailable: no final checkpoint; the WAL holds every write")
            else:
                try:
                    await self.checkpoint()
                except StorageError as exc:
                    log.error("final checkpoint failed (%s); the WAL still holds every write", exc)
                except Exception:
                    log.exception("final checkpoint failed; the WAL still holds every write")
                else:
                    await self._flush_shipping()  # publish the folded chain
        await self._release()

    async def _flush_shipping(self) -> None:
        """Ship what is left (closing); held replicated writes fail if that does not work."""
        if self._shipper is None:
            return
        if not await self._shipper.ship():
            log.warning("final WAL shipping round failed (%s); the local WAL keeps every write",
                        self._shipper.last_error)
        self._shipper.fail_waiters("the database is closing and the last shipping round failed")

    async def _release(self) -> None:
        await self.embedder.close()
        self._wal.close()
        for coll in self.collections.values():
            coll.close()
        if self._owns_executors:
            self.executors.shutdown(wait=True)
        if self._private_scratch is not None:
            shutil.rmtree(self._private_scratch, ignore_errors=True)
        if self._lock_fd is not None:
            unlock_directory(self._lock_fd)
            self._lock_fd = None

    def not_writer(self) -> str | None:
        """Why this database may not acknowledge writes now (replaced by another writer, its
        lease ran out), or None."""
        if self._shipper is not None and self._shipper.deposed is not None:
            return self._shipper.deposed
        return self.write_fence()

    @property
    def shipping(self) -> dict[str, Any] | None:
        """WAL shipping state and counters (None when this database does not ship)."""
        return self._shipper.stats() if self._shipper is not None else None

    def keep_unreferenced_for(self, seconds: float) -> None:
        """Garbage collection deletes a blob only once it has been unreferenced this long."""
        self.gc_grace_s = float(seconds)

    def detach(self) -> None:
        """The data directory's state was replaced underneath (a restore in place): refuse
        writes from now on and never checkpoint this memory over the new state."""
        self.ready = False
        self.detached = True

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
