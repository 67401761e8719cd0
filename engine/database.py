"""The database engine: collections + WAL + a single writer + an indexer + checkpoints.

Writes go through one writer task (group commit: many requests, one fsync) so WAL
order is apply order; a write is acknowledged after its fsync and its apply.  The
indexer drains acknowledged vectors into HNSW in the background.  Checkpoints store
every collection as blobs plus a manifest, swing the root pointer, then drop WAL
segments the manifest covers.  Restart = load the manifest + replay the WAL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import numpy as np

from s5vec.index import (
    Batch, Collection, CollectionConfig, CollectionExists, CollectionNotFound, Hit, InvalidRecord, ItemError,
    RawItem, RecordNotFound, check_same_definition, prepare_batch,
)
from s5vec.index import scoring
from s5vec.index.errors import SearchTimeout
from s5vec.index.filters import FilterLimits, check_filter_size, check_time, time_limit
from s5vec.index.recent import GRAPH_CHUNK
from s5vec.index.records import MAX_METADATA_BYTES, check_metadata_depth, merge_patch
from s5vec.index.scoring import ScoringSpec
from s5vec.index.segment import segment_file
from s5vec.index.schema import SCHEMAS
from s5vec.storage import (
    BlobId, BlobNotFound, BlobStore, LocalBlobStore, RootConflict, StorageError, StorageFull, WalCorrupt,
    WriteAheadLog, encode_blob,
)
from s5vec.storage.blobstore import os_failure
from s5vec.storage.datadir import DataDirLocked, lock_directory, unlock_directory

from .events import Change, EventBus, deleted, metadata_replaced, upserted
from .health import Probe, StorageHealth
from .memory import release_free_memory
from .backups import BackupCatalog
from .embedding import Embedder
from .manifest import SegmentRefs, new_manifest, read_collection, read_manifest, referenced_blobs, write_snapshot
from .executors import Executors
from .observer import EngineMetrics, NullMetrics
from .walrecords import Create, Delete, Drop, Lost, Meta, Upsert, WalRecord, decode_record, encode_record

T = TypeVar("T")
log = logging.getLogger(__name__)
_GROUP_MAX_OPS: Final = 256
TRIM_AFTER_INDEXED: Final = 20_000
"""The indexer gives freed heap memory back (malloc_trim) when it goes idle after this many
labels: often enough after an ingest burst, rare enough to cost nothing (~10 ms a time)."""
_RETRY_FIRST_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tunables of the engine (the daemon fills them from its config file)."""

    checkpoint_interval_s: float = 300.0
    checkpoint_wal_bytes: int = 256 << 20
    keep_manifests: int = 2
    max_pending: int = 100_000
    drain_batch: int = 256
    index_threads: int = 2
    search_threads: int = 4
    search_batches: int = 2
    migrate_interval_s: float = 60.0
    lazy_segments: bool = True
    migrate_max_records: int = 1_000_000
    wal_segment_bytes: int = 64 << 20
    storage_probe_s: float = 30.0          # how often a remote backend is asked whether it answers
    checkpoint_retry_max_s: float = 60.0   # longest wait between retries of a failed checkpoint
    background_nice: int = 10              # CPU niceness of graph building and migration threads
    index_linger_s: float = 0.02           # how long a few pending vectors wait to be indexed together
    graph_chunk: int = GRAPH_CHUNK         # vectors per hnswlib add_items call (a search waits for one)
    search_timeout_s: float = 5.0          # a search (or filtered listing) still running after this is cancelled
    filter_max_nodes: int = 1_000          # field conditions, operators and $and/$or branches in one filter
    filter_max_in_values: int = 10_000     # values in all $in/$nin lists of one filter together
    filter_max_bytes: int = 1 << 20        # JSON text of one filter in a request body

    @property
    def filter_limits(self) -> FilterLimits:
        return FilterLimits(self.filter_max_nodes, self.filter_max_in_values)


@dataclass(frozen=True, slots=True)
class Query:
    """How to search: k, per-tier knobs, filter, what to return, time budget."""

    k: int = 10
    ef: int | None = None
    filter: dict[str, Any] | None = None
    score_threshold: float | None = None
    include_metadata: bool = True
    include_vector: bool = False
    nprobe: int | None = None
    recent: bool = True
    historical: bool = True
    timeout_ms: float | None = None
    merge: str = "take_best"
    weights: tuple[float, ...] | None = None
    scoring: ScoringSpec | None = None


@dataclass(slots=True)
class _Op:
    """A write waiting for the writer: the record to log (a merge patch is logged merged),
    or None to stop the writer."""

    record: WalRecord | MetaPatch | None
    future: asyncio.Future[Any]
    batch: Batch | None = None  # the validated batch of an upsert (replay rebuilds it from the record)
    config: CollectionConfig | None = None


@dataclass(frozen=True, slots=True)
class MetaPatch:
    """A merge patch of record ``id``'s metadata, turned into a :class:`Meta` record by the
    writer against the state the earlier writes of its group leave."""

    c: str
    id: str
    patch: dict[str, Any]


def _checked_metadata(config: CollectionConfig, metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` as stored for a record of ``config`` (the schema's normal form), checked
    for depth and size. Raises InvalidRecord."""
    if config.schema is not None:
        metadata = SCHEMAS[config.schema](metadata)
    check_metadata_depth(metadata)
    if len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRecord("metadata", f"is larger than {MAX_METADATA_BYTES} bytes encoded")
    return metadata


class ReadOnlyDatabase(StorageError):
    """A write, checkpoint or maintenance job on a database opened read-only."""


class Database:
    """Everything one data directory holds. Create with :meth:`open`, end with :meth:`close`."""

    def __init__(self, data_dir: Path, config: EngineConfig, store: BlobStore | None = None,
                 events: EventBus | None = None, storage_mode: str = "local",
                 metrics: EngineMetrics | None = None, executors: Executors | None = None,
                 read_only: bool = False) -> None:
        self.data_dir = Path(data_dir)
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
            self._scratch = self.data_dir / "tmp"
            self._segment_dir = self.data_dir / "segments"
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
        self._wal = WriteAheadLog(self.data_dir / "wal", config.wal_segment_bytes)
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
        self.ready = False
        self.detached = False  # a restore replaced the directory's state: memory must never be checkpointed

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def open(cls, data_dir: Path, config: EngineConfig | None = None,
                   store: BlobStore | None = None, events: EventBus | None = None,
                   storage_mode: str = "local", metrics: EngineMetrics | None = None,
                   executors: Executors | None = None, read_only: bool = False) -> Database:
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
        ReadOnlyDatabase."""
        db = cls(data_dir, config or EngineConfig(), store, events, storage_mode, metrics, executors, read_only)
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
                config, recent, segments = await read_collection(self.store, entry, self._segment_dir,
                                                                 self._segment_refs, self.config.lazy_segments)
                self.collections[name] = await self._run(self._io, Collection.restore, config, recent,
                                                         segments, self._scratch)
            self.checkpoint_lsn = self.applied_lsn = int(manifest["lsn"])
            self._checkpoint_token = self._state_token()
        self.events.start_at(self.checkpoint_lsn)
        replayed = await self._run(self._writer_pool, self._replay)
        log.info("opened %s: %d collections, checkpoint LSN %d, %d WAL records replayed",
                 self.data_dir, len(self.collections), self.checkpoint_lsn, replayed)
        self._tasks = [asyncio.create_task(self._writer(), name="s5vec-writer")] if not self.read_only else []
        self._tasks += [asyncio.create_task(self._indexer(), name="s5vec-indexer"),
                        asyncio.create_task(self._search_dispatcher(), name="s5vec-search")]
        self._pending_changed.set()
        self.ready = True

    def _replay(self) -> int:
        count = 0
        changes: list[Change] = []
        for lsn, payload in self._wal.recover(self.checkpoint_lsn, repair=not self.read_only):
            record = decode_record(lsn, payload)
            try:
                self._apply_record(record, None, changes, lsn)
            except StorageError:
                raise
            except Exception as exc:  # a CRC-valid record this state cannot take: stop, skip nothing
                raise WalCorrupt(f"WAL record {lsn} ({record.__struct_config__.tag} on {record.c!r}) cannot be applied: "
                                 f"{type(exc).__name__}: {exc}") from exc
            self.applied_lsn = lsn
            count += 1
            if len(changes) >= 1024:  # the bus trims its window as it goes
                self.events.publish(changes)
                changes = []
        self.events.publish(changes, self.applied_lsn)
        return count

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
        await self._release()

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

    # ---------------------------------------------------------------------- reads
    def collection_items(self) -> list[tuple[str, Collection]]:
        """The collections as ``(name, collection)`` pairs, one consistent snapshot; safe on
        any thread while the writer creates and drops collections. A collection in it may be
        dropped by the time it is used (it then holds its last state)."""
        return list(self.collections.items())

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
        key = (name, q.k, q.ef, q.nprobe, q.include_metadata, q.include_vector, q.recent, q.historical)
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
        report: dict[str, Any] = {}
        deadline = time.monotonic() + q.timeout_ms / 1000.0 if q.timeout_ms else None
        fetch = scoring.candidate_count(q.k) if q.scoring is not None else q.k
        threshold = None if q.scoring is not None else q.score_threshold
        hits = coll.search(query, fetch, q.ef, q.filter, threshold, q.include_metadata or q.scoring is not None,
                           q.include_vector, nprobe=q.nprobe, recent=q.recent, historical=q.historical,
                           executor=self._tier_pool, deadline=deadline, report=report, merge=q.merge,
                           weights=q.weights)
        if q.scoring is not None:
            hits = scoring.rerank(hits, q.scoring, time.time(), q.k)
            if q.score_threshold is not None:
                hits = [h for h in hits if h.score >= q.score_threshold]
        partial = bool(report.get("partial"))
        self.metrics.observe_search(report.get("seconds", {}), 1, partial)
        return hits, partial

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
        name, k, ef, nprobe, include_metadata, include_vector, recent, historical = key
        try:
            coll = self.collection(name)
            queries = np.stack([item[1] for item in items]) if len(items) > 1 else items[0][1][None, :]
            threads = max(1, self.config.index_threads // max(1, self.config.search_batches))
            report: dict[str, Any] = {}
            results = await self._run(self._read_pool, functools.partial(
                coll.search_batch, queries, k, ef, None, None, include_metadata, include_vector,
                nprobe=nprobe, recent=recent, historical=historical, num_threads=threads,
                executor=self._tier_pool, report=report))
            self.metrics.observe_search(report.get("seconds", {}), len(items))
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

    @property
    def wal_bytes(self) -> int:
        return self._wal.size_bytes

    @property
    def wal_syncs(self) -> int:
        """fsync calls made by the WAL since open (group commit makes this < writes)."""
        return self._wal.syncs

    # --------------------------------------------------------------------- writes
    async def _submit(self, op: _Op) -> Any:
        if self.read_only:
            raise ReadOnlyDatabase(f"{self.data_dir} is open read-only: writes go to the writer")
        if not self.ready:
            raise StorageError("database is not open for writes")
        await self._queue.put(op)
        return await asyncio.shield(op.future)

    async def create_collection(self, config: CollectionConfig) -> bool:
        """Create a collection; False if an identical one exists. Raises CollectionExists."""
        config.validate()
        existing = self.collections.get(config.name)
        if existing is not None:
            check_same_definition(existing.config, config)
            return False
        await self.embedder.check(config)  # the model loads and fits the dimension (EmbeddingError)
        future = asyncio.get_running_loop().create_future()
        return bool(await self._submit(_Op(Create(config.name, config.to_dict()), future, config=config)))

    async def drop_collection(self, name: str) -> None:
        self.collection(name)
        future = asyncio.get_running_loop().create_future()
        await self._submit(_Op(Drop(name), future))

    async def upsert(self, name: str, items: Sequence[RawItem]) -> tuple[list[str], list[ItemError]]:
        """Validate and durably upsert ``items``; returns (ids written, per-item errors).
        Items with ``text`` instead of a vector are embedded by the collection's model first."""
        coll = self.collection(name)
        if any(item.text is not None for item in items):
            items = await self.embedder.embed_items(coll.config, items)
        if len(items) > 64:
            batch, errors = await self._run(self._read_pool, prepare_batch, coll.config, items)
        else:
            batch, errors = prepare_batch(coll.config, items)
        if len(batch):
            await self.upsert_batch(name, batch)
        return batch.ids, errors

    async def embed_query(self, name: str, text: str) -> np.ndarray:
        """``text`` as a query vector by the collection's ``embedding_model`` (EmbeddingError
        naming ``text`` when it has none)."""
        rows = await self.embedder.encode(self.collection(name).config, [text])
        return rows[0]

    async def upsert_batch(self, name: str, batch: Batch) -> None:
        """Durably upsert an already validated batch."""
        future = asyncio.get_running_loop().create_future()
        record = Upsert(name, batch.ids, batch.vectors.tobytes(), batch.metadata, batch.timestamps.tobytes())
        await self._submit(_Op(record, future, batch=batch))

    async def delete(self, name: str, ids: Sequence[str]) -> int:
        """Durably delete records by id; returns how many existed."""
        coll = self.collection(name)
        present = [rid for rid in dict.fromkeys(ids) if coll.contains(rid)]
        if not present:
            return 0
        future = asyncio.get_running_loop().create_future()
        return int(await self._submit(_Op(Delete(name, present), future)))

    async def update_metadata(self, name: str, record_id: str, metadata: dict[str, Any], merge: bool = False) -> None:
        """Durably replace one record's metadata, keeping its vector; with ``merge``, apply
        ``metadata`` to the current metadata as a JSON Merge Patch (RFC 7396: ``None`` deletes
        a key, objects merge recursively). The merge runs in the single writer, so concurrent
        patches of one record all land, and the WAL logs the merged result.
        Raises RecordNotFound, InvalidRecord."""
        coll = self.collection(name)
        if not isinstance(metadata, dict):
            raise InvalidRecord("metadata", "must be a JSON object")
        if merge:
            check_metadata_depth(metadata)  # bounds merge_patch's recursion; the result is checked in the writer
        else:
            metadata = _checked_metadata(coll.config, metadata)
        if not coll.contains(record_id):
            raise RecordNotFound(f"no record {record_id!r} in collection {name!r}")
        future = asyncio.get_running_loop().create_future()
        record = MetaPatch(name, record_id, metadata) if merge else Meta(name, record_id, metadata)
        result = await self._submit(_Op(record, future))
        if isinstance(result, Exception):
            raise result

    async def delete_matching(self, name: str, spec: dict[str, Any]) -> int:
        """Delete every record whose metadata matches ``spec``; returns how many."""
        coll = self.collection(name)
        check_filter_size(spec, self.config.filter_limits)
        ids = await self._run(self._read_pool, coll.ids_matching, spec)
        return await self.delete(name, ids) if ids else 0

    async def tune(self, name: str, target: float, sample: int) -> dict[str, Any]:
        """Calibrate ``ef``/``nprobe`` of one collection for ``target`` recall@10 (CPU heavy)."""
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

    async def _writer(self) -> None:
        """Group commit: take every queued write, log them with one fsync, apply, resolve."""
        while True:
            ops = [await self._queue.get()]
            while len(ops) < _GROUP_MAX_OPS and not self._queue.empty():
                ops.append(self._queue.get_nowait())
            stops = [i for i, op in enumerate(ops) if op.record is None]
            stop = bool(stops)
            if stop:
                for late in ops[stops[0] + 1:]:
                    if not late.future.done():
                        late.future.set_exception(StorageError("database is shutting down"))
                ops = ops[:stops[0]]
            while self._total_pending() > self.config.max_pending and any(isinstance(o.record, Upsert) for o in ops):
                self._drained.clear()
                await self._drained.wait()
            if ops:
                await self._commit_group(ops)
            self._pending_changed.set()
            if stop:
                return

    async def _commit_group(self, ops: list[_Op]) -> None:
        async with self._write_lock:
            try:
                results, changes = await self._run(self._writer_pool, self._commit, ops)
            except Exception as exc:  # WAL failure: nothing was applied or acknowledged
                log.error("WAL commit of %d operations failed: %s", len(ops), exc)
                error = exc if isinstance(exc, StorageError) else StorageError(str(exc))
                results, changes = [error] * len(ops), []
                self.storage.record_write_error(error, self._wal.failed)
            else:
                if self.storage.write_error is not None and self.storage.record_write_ok():
                    log.info("WAL writes land again")
        for op, result in zip(ops, results):
            if op.future.done():
                continue
            if isinstance(result, BaseException):
                op.future.set_exception(result)
            else:
                op.future.set_result(result)
        self.events.publish(changes, self.applied_lsn)

    def _commit(self, ops: list[_Op]) -> tuple[list[Any], list[Change]]:
        """Writer thread: check each op against the state, log the good ones, apply them.
        Returns each op's result and the changes to publish as events."""
        names = set(self.collections)
        accepted: list[tuple[int, _Op, WalRecord]] = []
        results: list[Any] = [None] * len(ops)
        changes: list[Change] = []
        for position, op in enumerate(ops):
            record = op.record
            assert record is not None
            name = record.c
            if isinstance(record, Create):
                if name in names:
                    existing = self.collections.get(name)
                    if existing is not None and existing.config != op.config:
                        results[position] = CollectionExists(f"collection {name!r} exists with a different definition")
                    else:
                        results[position] = False
                    continue
                names.add(name)
            elif name not in names:
                results[position] = CollectionNotFound(f"collection {name!r} does not exist")
                continue
            elif isinstance(record, Drop):
                names.discard(name)
            if isinstance(record, MetaPatch):
                try:
                    record = self._merged(record, [r for _, _, r in accepted])
                except (RecordNotFound, InvalidRecord) as exc:
                    results[position] = exc
                    continue
            accepted.append((position, op, record))
        if accepted:
            lsn = self._wal.append([encode_record(record) for _, _, record in accepted])
            first = lsn - len(accepted) + 1
            for offset, (position, op, record) in enumerate(accepted):
                results[position] = self._apply_record(record, op, changes, first + offset)
                self.applied_lsn = first + offset
        return results, changes

    def _merged(self, patch: MetaPatch, earlier: list[WalRecord]) -> Meta:
        """Writer thread: the :class:`Meta` record of ``patch`` (the merged metadata in full,
        so replay needs no merge), read from the state after ``earlier`` records of this group
        (logged, not yet applied). Raises RecordNotFound, InvalidRecord."""
        name, record_id = patch.c, patch.id
        current: dict[str, Any] | None = None
        for done in reversed(earlier):
            if done.c != name:
                continue
            if isinstance(done, (Drop, Create)) or (isinstance(done, Delete) and record_id in done.ids):
                raise RecordNotFound(f"no record {record_id!r} in collection {name!r}")
            if isinstance(done, Meta) and done.id == record_id:
                current = done.m
            elif isinstance(done, Upsert) and record_id in done.ids:
                current = done.m[len(done.ids) - 1 - done.ids[::-1].index(record_id)]
            if current is not None:
                break
        if current is None:
            coll = self.collections[name]
            current = coll.get(record_id, include_vector=False).metadata or {}
        merged = _checked_metadata(self.collections[name].config, merge_patch(current, patch.patch))
        return Meta(name, record_id, merged)

    def _apply_record(self, record: WalRecord, op: _Op | None = None, changes: list[Change] | None = None,
                      lsn: int = 0) -> Any:
        """Apply one WAL record (the writer's, replay's, and a follower's one way to change
        state); with ``changes``, append what it changed (for events)."""
        name = record.c
        if isinstance(record, Lost):  # an unreadable record that `s5vec wal salvage` set aside
            log.warning("WAL record %d was lost to damage; its bytes are kept in %s", lsn, record.aside)
            return None
        if isinstance(record, Create):
            config = op.config if op and op.config else CollectionConfig.from_dict(record.config)
            if name not in self.collections:
                self.collections = {**self.collections, name: Collection(config, self._scratch)}  # copy-on-write
            return True
        coll = self.collections.get(name)
        if coll is None:
            return CollectionNotFound(f"collection {name!r} does not exist")
        if isinstance(record, Drop):
            self.collections = {n: c for n, c in self.collections.items() if n != name}  # copy-on-write
            coll.close()
            shutil.rmtree(self._segment_dir / name, ignore_errors=True)
            return None
        if isinstance(record, Meta):
            try:
                coll.apply_metadata(record.id, record.m)
            except RecordNotFound as exc:
                return exc
            if changes is not None:
                hit = coll.get(record.id, include_vector=True)
                changes.append(metadata_replaced(lsn, name, hit.id, hit.vector, record.m, hit.timestamp or 0.0))
            return None
        if isinstance(record, Upsert):
            batch = op.batch if op and op.batch is not None else Batch(
                list(record.ids),
                np.frombuffer(record.v, np.float32).reshape(len(record.ids), coll.config.dimension),
                list(record.m), np.frombuffer(record.t, np.float64))
            existed = coll.apply_upsert(batch)
            if changes is not None:
                changes.append(upserted(lsn, name, batch.ids, batch.vectors, batch.metadata, batch.timestamps,
                                        existed))
            return len(batch)
        if isinstance(record, Delete):
            if changes is not None:
                present = [rid for rid in record.ids if coll.contains(rid)]
                if present:
                    changes.append(deleted(lsn, name, present))
            return coll.apply_delete(record.ids)
        raise StorageError(f"unknown WAL record {type(record).__name__}")

    # -------------------------------------------------------------------- indexer
    def _total_pending(self) -> int:
        return sum(c.pending for c in self.collections.values())

    async def _indexer(self) -> None:
        linger = self.config.index_linger_s
        since_trim = 0  # labels drained since free heap memory was last given back
        while True:
            await self._pending_changed.wait()
            self._pending_changed.clear()
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

    async def wait_indexed(self, timeout: float = 600.0) -> None:
        """Wait until every acknowledged vector is in its HNSW graph."""
        async with asyncio.timeout(timeout):
            while self._total_pending():
                self._drained.clear()
                await self._drained.wait()

    # ---------------------------------------------------------------- checkpoints
    async def checkpoint_due(self) -> bool:
        """One tick of the checkpointer (call about once a second): probe a remote backend
        every ``storage_probe_s``, then say whether a checkpoint is due: after
        ``checkpoint_interval_s``, past ``checkpoint_wal_bytes`` of WAL, or, after a
        failure, once its exponential backoff has passed."""
        now = time.time()
        if now >= self._next_probe:
            self._next_probe = now + self.config.storage_probe_s
            await self.probe_storage()
        if self.storage.consecutive_failures:
            return now >= self._retry_at
        return (now - self.last_checkpoint >= self.config.checkpoint_interval_s
                or self.wal_bytes >= self.config.checkpoint_wal_bytes)

    async def probe_storage(self) -> bool:
        """Ask the backend whether it answers (stores without ``ping`` always do); records
        the answer in ``self.storage`` and logs a change once."""
        if not isinstance(self.store, Probe):
            return True
        try:
            ok = await self.store.ping()
        except Exception as exc:  # a probe must never take the checkpointer down
            ok = False
            log.debug("storage probe raised %s", type(exc).__name__)
        if self.storage.record_probe(ok):
            if ok:
                log.info("storage backend (%s) answers again", self.storage.mode)
            else:
                log.warning("storage backend (%s) does not answer; writes continue into the WAL, "
                            "checkpoints wait", self.storage.mode)
        return ok

    def _checkpoint_failed(self, exc: BaseException) -> None:
        if self.storage.record_failure(exc):
            log.warning("checkpoint failed, root pointer unchanged, WAL kept; retrying with backoff: %s",
                        self.storage.last_error)
        else:
            log.debug("checkpoint failed again (%d in a row): %s", self.storage.consecutive_failures,
                      self.storage.last_error)
        delay = min(self.config.checkpoint_retry_max_s,
                    _RETRY_FIRST_S * 2 ** min(self.storage.consecutive_failures - 1, 16))
        self._retry_at = time.time() + delay

    async def checkpoint(self) -> BlobId | None:
        """Persist every collection as blobs + a manifest, swing the root, trim the WAL.

        Raises StorageError (BackendUnavailable, ...) when the backend fails; then the root
        is not moved, the WAL is kept, and ``self.storage`` records the failure."""
        if self.detached:
            raise StorageError("the data directory was restored underneath this database; reopen it")
        if self.read_only:
            raise ReadOnlyDatabase(f"{self.data_dir} is open read-only: the writer checkpoints")
        unchanged = self.root
        started = time.perf_counter()
        try:
            try:
                manifest_id = await self._checkpoint()
            except StorageFull:
                # Unreferenced blobs (old snapshots, a failed checkpoint's leftovers) wait
                # gc_grace_s; on a full disk they are what blocks the checkpoint that would
                # let the WAL shrink. Delete them now and try once more.
                if not await self._free_space():
                    raise
                manifest_id = await self._checkpoint()
        except Exception as exc:
            self.metrics.job_finished("checkpoint", "failure", time.perf_counter() - started)
            if isinstance(exc, StorageError):
                self._checkpoint_failed(exc)
            raise
        if manifest_id == unchanged:
            self.metrics.job_finished("checkpoint", "skipped", time.perf_counter() - started)
            return manifest_id  # nothing new to store: the backend was not asked, so it proved nothing
        self.metrics.job_finished("checkpoint", "success", time.perf_counter() - started)
        if self.storage.record_success(self.last_checkpoint):
            log.info("checkpoint succeeded: storage backend (%s) is healthy again", self.storage.mode)
        return manifest_id

    async def _checkpoint(self) -> BlobId | None:
        async with self._checkpoint_lock:
            async with self._write_lock:
                lsn = self.applied_lsn
                token = self._state_token()
                if token == self._checkpoint_token and self.root is not None:
                    self.last_checkpoint = time.time()
                    return self.root
                await self._run(self._writer_pool, self._wal.rotate)
                collections = dict(self.collections)
                snaps = {name: await self._run(self._io, coll.snapshot) for name, coll in collections.items()}
            started = time.time()
            entries = {name: await write_snapshot(self.store, snap, self._segment_refs)
                       for name, snap in snaps.items()}
            del snaps
            manifest = new_manifest(lsn, entries, self.root)
            blob = await self._run(self._io, encode_blob, manifest)
            manifest_id = await self.store.put(blob)
            await self._swing_root(manifest_id, lsn)
            previous, self.root = self.root, manifest_id
            self.checkpoint_lsn, self.last_checkpoint = lsn, time.time()
            self._checkpoint_token = token
            try:
                await self._run(self._writer_pool, self._wal.truncate_through, lsn)
            except StorageError as exc:  # the checkpoint stands; the next one drops these segments
                log.warning("dropping WAL segments covered by checkpoint %s failed: %s", manifest_id, exc)
            try:
                await self._collect_garbage(manifest_id)
            except StorageError as exc:  # the checkpoint stands; unreferenced blobs wait for the next one
                log.warning("garbage collection after checkpoint %s failed: %s", manifest_id, exc)
            log.info("checkpoint at LSN %d: manifest %s (%.2fs)", lsn, manifest_id, time.time() - started)
            self.events.publish_job("checkpoint_completed", {"lsn": lsn, "manifest": str(manifest_id),
                                                             "seconds": round(time.time() - started, 3)})
            del previous
            return manifest_id

    def _state_token(self) -> tuple[Any, ...]:
        """Changes whenever a checkpoint would store something new: writes (LSN), graph
        progress, migrations and tuning (which do not go through the WAL)."""
        return (self.applied_lsn, tuple((name, c.recent.hnsw_upto, tuple(s.seq for s in c.segments),
                                         len(c.recent.parked),
                                         tuple(sorted(c.tuned.items())), id(c.recent))
                                        for name, c in sorted(self.collections.items())))

    async def _swing_root(self, manifest_id: BlobId, lsn: int) -> None:
        """Compare-and-set the root from ``self.root`` to ``manifest_id``.

        A swap that timed out may have landed although it was not acknowledged: the next
        one then finds the root at a manifest built by this database on the same root
        (its ``previous`` is ``self.root``, its LSN at most ``lsn``) and swaps from it."""
        try:
            await self.store.set_root(manifest_id, self.root)
            return
        except RootConflict:
            current = await self.store.get_root()
            if current is None or current == self.root:
                raise
            manifest = await read_manifest(self.store, current)
            previous = manifest.get("previous")
            ours = (BlobId.from_bytes(previous) if previous else None) == self.root and int(manifest["lsn"]) <= lsn
            if not ours:
                raise
        log.info("root pointer was already at %s (an unacknowledged earlier swap); moving on", current)
        await self.store.set_root(manifest_id, current)

    async def _collect_garbage(self, current: BlobId, grace_s: float | None = None) -> int:
        """Delete blobs that none of the last ``keep_manifests`` manifests and no retained
        backup reference, once they have been unreferenced for ``gc_grace_s``. Runs under
        the checkpoint lock (a checkpoint in flight has stored blobs no manifest names yet)."""
        keep: set[BlobId] = set()
        manifest_id: BlobId | None = current
        for _ in range(self.config.keep_manifests):
            if manifest_id is None:
                break
            try:
                manifest = await read_manifest(self.store, manifest_id)
            except BlobNotFound:
                if manifest_id == current:
                    raise
                break  # an older manifest is gone already (a restored directory starts a new chain)
            keep.add(manifest_id)
            keep.update(referenced_blobs(manifest))
            previous = manifest.get("previous")
            manifest_id = BlobId.from_bytes(previous) if previous else None
        keep.update(await self.backups.pinned())
        now = time.time()
        unreferenced: dict[BlobId, float] = {}
        removed = 0
        for blob_id in await self.store.list():
            if blob_id in keep:
                continue
            since = self._unreferenced.get(blob_id, now)
            if now - since >= (self.gc_grace_s if grace_s is None else grace_s):
                await self.store.delete(blob_id)
                removed += 1
            else:
                unreferenced[blob_id] = since
        self._unreferenced = unreferenced
        self.last_gc = {"finished": now, "removed": removed, "waiting": len(unreferenced), "kept": len(keep)}
        return removed

    async def _free_space(self) -> int:
        """Delete every unreferenced blob now, ignoring ``gc_grace_s`` (the disk is full);
        returns how many went."""
        async with self._checkpoint_lock:
            if self.root is None:
                return 0
            removed = await self._collect_garbage(self.root, grace_s=0.0)
        if removed:
            log.warning("disk full: deleted %d unreferenced blobs without waiting gc_grace_s", removed)
        return removed

    async def collect_garbage(self) -> int:
        """Run garbage collection now (between checkpoints); returns how many blobs went."""
        async with self._checkpoint_lock:
            if self.root is None:
                return 0
            return await self._collect_garbage(self.root)

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
        if rebuilt or removed:
            log.info("rebuilt %d segments (%d merged into others), removed %d empty ones in %.2fs",
                     rebuilt, merged, removed, time.time() - started)
        return {"rebuilt": rebuilt, "merged": merged, "removed": removed, "seconds": round(time.time() - started, 3)}


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
