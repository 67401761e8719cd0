"""WAL shipping: the writer's log, uploaded in chunks as blobs, so another node (a follower,
or a new machine with only the seed phrase) can reach every shipped write.

A chunk is one CBOR+zstd blob through the database's blob store (so encrypted on a
portal) holding consecutive WAL records, the writer's epoch, and the chain it extends:
the manifest it follows (id and LSN) and the earlier chunks after that manifest. The
store's replication head pointer (a second registry entry on a portal, the ``HEAD`` file
locally) names the newest chunk, so reading the head gives the whole state:
manifest + chain + the head chunk's own records. A checkpoint folds shipped chunks: the
next chunk names the new manifest and drops chunks it covers.

``durability = "replicated"``: a write is acknowledged once the head naming its chunk is
published (group commit: writes that arrive while one upload is in flight go in the next).
``"local"``: acknowledged after the local fsync as before; shipping follows at least every
``ship_interval_ms``, so losing the machine loses at most about that much.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

from s5vec.storage import (
    BackendUnavailable,
    BlobCorrupt,
    BlobId,
    BlobStore,
    HeadPointer,
    RootConflict,
    StorageError,
    WalCorrupt,
    decode_blob,
    encode_blob,
)

from .config import ReplicationConfig
from .errors import NotWriter

log = logging.getLogger(__name__)

CHUNK_FORMAT: Final = "s5vec-wal-chunk"
CHUNK_VERSION: Final = 1
_RETRY_MAX_S: Final = 5.0
FOLDED_KEEP_S: Final = 60.0


DURABILITY: Final[ContextVar[str | None]] = ContextVar("s5vec_durability", default=None)
"""A caller's durability for the writes it submits (``local`` or ``replicated``; None: the
database's ``replication.durability``). Set it around a write call (the daemon does, from
``?durability=``); a write of a database that does not ship cannot be ``replicated``."""


class NotReplicated(BackendUnavailable):
    """A write is logged on this node but its WAL chunk was not stored in time
    (``durability = "replicated"``): it may still be shipped; it was not acknowledged."""


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One shipped chunk: its first and last LSN and its blob."""

    first: int
    last: int
    blob: BlobId

    def to_list(self) -> list[Any]:
        return [self.first, self.last, self.blob.to_bytes()]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A decoded chunk blob: its records (LSN ``first`` on) and the chain it extends."""

    first: int
    epoch: int
    records: tuple[bytes, ...]
    manifest: BlobId | None
    manifest_lsn: int
    chain: tuple[ChunkRef, ...]
    created: float

    @property
    def last(self) -> int:
        return self.first + len(self.records) - 1

    @property
    def lsn(self) -> int:
        """Everything up to this LSN is in the manifest, the chain or this chunk."""
        return max(self.last, self.manifest_lsn)


def encode_chunk(first: int, epoch: int, records: Sequence[bytes], manifest: BlobId | None, manifest_lsn: int,
                 chain: Sequence[ChunkRef]) -> bytes:
    """The blob of one chunk (CPU work: call it on a worker for large chunks)."""
    return encode_blob({"format": CHUNK_FORMAT, "version": CHUNK_VERSION, "first": first, "epoch": epoch,
                        "records": list(records), "manifest": manifest.to_bytes() if manifest else None,
                        "manifest_lsn": manifest_lsn, "chain": [c.to_list() for c in chain],
                        "created": time.time()})


def decode_chunk(blob: bytes, where: BlobId) -> Chunk:
    """Inverse of :func:`encode_chunk`. Raises BlobCorrupt naming ``where`` for any bad shape."""
    doc = decode_blob(blob)
    try:
        if not isinstance(doc, dict) or doc.get("format") != CHUNK_FORMAT:
            raise ValueError("not an s5vec WAL chunk")
        if doc.get("version") != CHUNK_VERSION:
            raise ValueError(f"unsupported version {doc.get('version')}")
        first, epoch, lsn = doc["first"], doc["epoch"], doc["manifest_lsn"]
        if not all(isinstance(v, int) and v >= 0 for v in (first, epoch, lsn)) or first < 1:
            raise ValueError("'first', 'epoch' and 'manifest_lsn' must be non-negative integers (first >= 1)")
        records = doc["records"]
        if not isinstance(records, list) or not all(isinstance(r, bytes) for r in records):
            raise ValueError("'records' must be a list of byte strings")
        manifest = BlobId.from_bytes(doc["manifest"]) if doc["manifest"] is not None else None
        chain = tuple(ChunkRef(int(a), int(b), BlobId.from_bytes(c)) for a, b, c in doc["chain"])
        expected = chain[0].first if chain else first
        for ref in chain:
            if ref.first != expected or ref.last < ref.first - 1:
                raise ValueError(f"chain is not contiguous at LSN {expected}")
            expected = ref.last + 1
        if expected != first:
            raise ValueError(f"chain ends before LSN {expected}, the chunk starts at {first}")
        return Chunk(first, epoch, tuple(records), manifest, lsn, chain, float(doc.get("created", 0.0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise BlobCorrupt(f"WAL chunk {where} is malformed: {exc}") from None


async def read_head(store: BlobStore, cpu: Callable[..., Any]) -> tuple[BlobId, Chunk] | None:
    """The newest shipped chunk the store's head pointer names, or None (no head, or a
    store without one). ``cpu(fn, *args)`` runs decoding off the event loop."""
    if not isinstance(store, HeadPointer):
        return None
    head_id = await store.get_head()
    if head_id is None:
        return None
    return head_id, await cpu(decode_chunk, await store.get(head_id), head_id)


async def shipped_records(store: BlobStore, head: tuple[BlobId, Chunk], after_lsn: int,
                          cpu: Callable[..., Any]) -> list[tuple[int, bytes]]:
    """Every shipped record with LSN > ``after_lsn``, in order (chunks fetched concurrently).
    Raises WalCorrupt when the chain starts after ``after_lsn + 1`` (records in between
    are in no manifest or chunk this head names), BlobNotFound/BlobCorrupt for bad chunks."""
    head_id, chunk = head
    if chunk.lsn <= after_lsn:
        return []
    refs = [ref for ref in chunk.chain if ref.last > after_lsn]
    start = refs[0].first if refs else chunk.first
    if start > after_lsn + 1:
        raise WalCorrupt(f"the shipped WAL (head {head_id}) resumes at LSN {start} but this state ends at "
                         f"{after_lsn}: records in between are missing")
    chunks = await asyncio.gather(*(_fetch_chunk(store, ref.blob, cpu) for ref in refs))
    records: list[tuple[int, bytes]] = []
    for ref, part in zip(refs, chunks):
        if (part.first, part.last) != (ref.first, ref.last):
            raise BlobCorrupt(f"WAL chunk {ref.blob} holds LSNs {part.first}..{part.last}, "
                              f"its chain says {ref.first}..{ref.last}")
        records += [(part.first + i, r) for i, r in enumerate(part.records) if part.first + i > after_lsn]
    records += [(chunk.first + i, r) for i, r in enumerate(chunk.records) if chunk.first + i > after_lsn]
    return records


async def _fetch_chunk(store: BlobStore, blob_id: BlobId, cpu: Callable[..., Any]) -> Chunk:
    chunk: Chunk = await cpu(decode_chunk, await store.get(blob_id), blob_id)
    return chunk


@dataclass(slots=True)
class _Waiter:
    lsn: int
    future: asyncio.Future[Any]
    result: Any
    since: float


class WalShipper:
    """Ships the records the writer logs (:meth:`add`, from the writer thread) as chunks, at
    least every ``ship_interval_ms``, and holds acknowledgements back until their chunk is
    stored when ``durability`` is ``replicated`` (:meth:`hold`). ``lock`` is held while a
    chunk is being stored: garbage collection takes it so it never sees a chunk half-shipped.
    """

    def __init__(self, store: BlobStore, config: ReplicationConfig, cpu: Callable[..., Any],
                 epoch: int = 0, fence: Callable[[], str | None] | None = None) -> None:
        if not isinstance(store, HeadPointer):
            raise StorageError(f"WAL shipping needs a store with a replication head; {type(store).__name__} has none")
        self.store = store
        self.config = config
        self.epoch = epoch
        self.fence = fence or (lambda: None)  # why this node may not publish now (a lost lease), or None
        self.deposed: str | None = None  # set once another writer moved the head: never publish again
        self.lock = asyncio.Lock()
        self._cpu = cpu
        self._records_lock = threading.Lock()
        self._pending: list[tuple[int, bytes]] = []
        self._pending_since = 0.0  # monotonic time the oldest unshipped record was logged
        self._waiters: list[_Waiter] = []
        self._wake = asyncio.Event()
        self.manifest: BlobId | None = None
        self.manifest_lsn = 0
        self.chain: list[ChunkRef] = []
        self.head: BlobId | None = None
        self._published_manifest: BlobId | None = None
        self._takeover = False  # the head found at open is another epoch's: publish ours at once
        self._folded_at: dict[BlobId, float] = {}  # folded chunks still named: since when they are folded
        self.folded_keep_s = FOLDED_KEEP_S
        self._head_known = True  # False until the head is read (it could not be at open)
        self.shipped_lsn = 0
        # counters for metrics and /stats
        self.chunks_shipped = 0
        self.bytes_shipped = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_ship_seconds = 0.0  # upload time of the last successful round
        self.last_delay_seconds = 0.0  # oldest record's wait from its fsync to its publication
        self.last_shipped_at = 0.0

    # ------------------------------------------------------------------ state

    def start(self, manifest: BlobId | None, manifest_lsn: int, head: tuple[BlobId, Chunk] | None,
              known: bool = True) -> None:
        """Continue the chain found at open: ``manifest`` is what the root names now.
        ``known`` False: the head could not be read (the backend was down); the first
        round reads it before replacing it."""
        self._head_known = known
        self.manifest, self.manifest_lsn = manifest, manifest_lsn
        self.shipped_lsn = manifest_lsn
        if head is not None:
            head_id, chunk = head
            refs = [*chunk.chain, ChunkRef(chunk.first, chunk.last, head_id)]
            self.chain = [ref for ref in refs if ref.last > manifest_lsn]
            self.shipped_lsn = max(manifest_lsn, chunk.lsn)
            self.head = head_id
            self._published_manifest = chunk.manifest
            self._takeover = chunk.epoch != self.epoch
        if self.chain and self.chain[0].first > manifest_lsn + 1:
            raise WalCorrupt(f"the shipped WAL resumes at LSN {self.chain[0].first} after a manifest at {manifest_lsn}")

    @property
    def pending_records(self) -> int:
        with self._records_lock:
            return len(self._pending)

    def add(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Queue logged records for shipping (any thread; in LSN order)."""
        if not records:
            return
        with self._records_lock:
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.extend(records)

    def hold(self, lsn: int, future: asyncio.Future[Any], result: Any) -> None:
        """Resolve ``future`` with ``result`` once LSN ``lsn`` is shipped (event loop)."""
        if lsn <= self.shipped_lsn:
            if not future.done():
                future.set_result(result)
            return
        self._waiters.append(_Waiter(lsn, future, result, time.monotonic()))
        self._wake.set()

    def folded(self, manifest: BlobId, lsn: int) -> None:
        """A checkpoint stored ``manifest`` (everything up to ``lsn``) and swung the root."""
        self.manifest, self.manifest_lsn = manifest, lsn
        self.shipped_lsn = max(self.shipped_lsn, lsn)
        self._wake.set()

    def _unfolded(self, manifest_lsn: int) -> list[ChunkRef]:
        """The chain a new head names: the chunks after the manifest, and for
        ``FOLDED_KEEP_S`` also those a checkpoint folded, so a follower that missed the head
        naming them (it polls less often than heads change) still finds them. Dropped from
        the front only: the chain stays contiguous."""
        now = time.monotonic()
        chain = list(self.chain)
        while chain and chain[0].last <= manifest_lsn:
            folded = self._folded_at.setdefault(chain[0].blob, now)
            if now - folded < self.folded_keep_s:
                break
            self._folded_at.pop(chain.pop(0).blob, None)
        return chain

    def referenced(self) -> set[BlobId]:
        """Blobs the published head still needs (garbage collection keeps them)."""
        refs = {ref.blob for ref in self.chain}
        if self.head is not None:
            refs.add(self.head)
        return refs

    @property
    def lag_seconds(self) -> float:
        """How long the oldest unshipped record has waited (0 when all are shipped)."""
        with self._records_lock:
            return time.monotonic() - self._pending_since if self._pending else 0.0

    def stats(self) -> dict[str, Any]:
        return {"shipped_lsn": self.shipped_lsn, "head": str(self.head) if self.head else None,
                "manifest_lsn": self.manifest_lsn, "chain_chunks": len(self.chain),
                "pending_records": self.pending_records, "chunks_shipped": self.chunks_shipped,
                "bytes_shipped": self.bytes_shipped, "failures": self.failures,
                "last_error": self.last_error, "last_ship_seconds": round(self.last_ship_seconds, 4),
                "last_delay_seconds": round(self.last_delay_seconds, 4), "lag_seconds": round(self.lag_seconds, 3),
                "waiting_acks": len(self._waiters), "durability": self.config.durability, "epoch": self.epoch,
                "deposed": self.deposed}

    # ------------------------------------------------------------------ shipping

    async def run(self) -> None:
        """The shipping task: a round every ``ship_interval_ms``, and at once when a
        replicated write waits; failed rounds back off (up to 5 s) and keep every record."""
        interval = self.config.ship_interval_ms / 1000.0
        while True:
            delay = interval
            if self.consecutive_failures:
                delay = min(_RETRY_MAX_S, interval * 2 ** min(self.consecutive_failures - 1, 8))
            try:
                async with asyncio.timeout(delay):
                    while not (self._wake.is_set() and not self.consecutive_failures):
                        await self._wake.wait()
                        if self.consecutive_failures:  # a failing backend: wait out the backoff
                            await asyncio.sleep(delay)
                            break
            except TimeoutError:
                pass
            self._wake.clear()
            await self.ship()
            self._expire()

    async def ship(self) -> bool:
        """One round: store the unshipped records as chunks and publish the head. True
        when everything logged so far is published; on failure the records stay queued."""
        async with self.lock:
            if self.deposed is not None or self.fence() is not None:
                self.fail_waiters(self.deposed or self.fence() or "")
                return False
            with self._records_lock:
                records, self._pending = self._pending, []
                since = self._pending_since
            if not records and self._published_manifest == self.manifest and self.head is not None \
                    and not self._takeover:
                self._release()
                return True
            if not records and self.manifest is None and self.head is None:
                return True  # nothing was ever written
            manifest, manifest_lsn = self.manifest, self.manifest_lsn
            chain = self._unfolded(manifest_lsn)
            started = time.monotonic()
            try:
                head, stored = await self._store(records, manifest, manifest_lsn, chain)
                fenced = self.fence()
                if fenced is not None:
                    raise NotWriter(fenced)
                if not self._head_known:
                    await self._learn_head()
                await self.store.set_head(head, self.head)  # type: ignore[attr-defined]
            except RootConflict as exc:
                self.deposed = (f"another writer moved the replication head ({exc}); this node stopped "
                                "acknowledging writes")
                log.error("%s", self.deposed)
                self.fail_waiters(self.deposed)
                return False
            except BaseException as exc:
                with self._records_lock:
                    self._pending[:0] = records
                    if records:
                        self._pending_since = since
                if isinstance(exc, Exception):
                    self._failed(exc)
                    return False
                raise
            now = time.monotonic()
            self.chain, self.head, self._published_manifest = chain, head, manifest
            self._takeover = False
            if records:
                self.shipped_lsn = max(self.shipped_lsn, records[-1][0])
                self.last_delay_seconds = now - since
            self.chunks_shipped += len(stored)
            self.bytes_shipped += sum(stored)
            self.last_ship_seconds, self.last_shipped_at = now - started, time.time()
            if self.consecutive_failures:
                log.info("WAL shipping works again (head %s, LSN %d)", head, self.shipped_lsn)
            self.consecutive_failures = 0
            self.last_error = None
            fenced = self.fence()  # the lease ran out while publishing (a paused process): acknowledge nothing
            if fenced is not None:
                self.fail_waiters(fenced)
                return False
            self._release()
            return True

    async def _store(self, records: list[tuple[int, bytes]], manifest: BlobId | None, manifest_lsn: int,
                     chain: list[ChunkRef]) -> tuple[BlobId, list[int]]:
        """Store ``records`` as chunks (each at most ``chunk_max_bytes`` of records, the last
        one the new head), extending ``chain`` in place; returns the head and blob sizes."""
        groups: list[list[tuple[int, bytes]]] = [[]]
        size = 0
        for record in records:
            if groups[-1] and size + len(record[1]) > self.config.chunk_max_bytes:
                groups.append([])
                size = 0
            groups[-1].append(record)
            size += len(record[1])
        # Records the manifest already holds are shipped too: a follower that applied up to
        # just before them finds them in a chunk it has seen, instead of reloading the manifest.
        expected = chain[-1].last + 1 if chain else manifest_lsn + 1
        if records and (records[0][0] != expected if chain else records[0][0] > expected):
            raise WalCorrupt(f"WAL shipping lost its place: the next record is LSN {records[0][0]}, "
                             f"the chain needs {expected}")
        expected = records[0][0] if records else expected
        stored: list[int] = []
        head: BlobId | None = None
        span = (expected, expected - 1)
        for group in groups:
            if head is not None:
                chain.append(ChunkRef(span[0], span[1], head))
            first = group[0][0] if group else expected
            blob = await self._cpu(encode_chunk, first, self.epoch, [p for _, p in group], manifest, manifest_lsn,
                                   list(chain))
            head = await self.store.put(blob)
            stored.append(len(blob))
            span = (first, first + len(group) - 1)
        assert head is not None
        chain.append(ChunkRef(span[0], span[1], head))  # the chain held in memory names the head too
        return head, stored

    async def _learn_head(self) -> None:
        """The head this node could not read at open: replace it, unless a newer epoch
        wrote it (then this node was replaced while it was cut off). Raises RootConflict."""
        found = await read_head(self.store, self._cpu)
        if found is not None and found[1].epoch > self.epoch:
            raise RootConflict(f"the replication head {found[0]} is of epoch {found[1].epoch}, this node's is "
                               f"{self.epoch}")
        self.head = found[0] if found is not None else None
        self._head_known = True

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.consecutive_failures == 1:
            log.warning("WAL shipping failed; the records stay queued and the next round retries: %s",
                        self.last_error)
        else:
            log.debug("WAL shipping failed again (%d in a row): %s", self.consecutive_failures, self.last_error)

    def _release(self) -> None:
        """Acknowledge every held write whose LSN is shipped now."""
        waiting = []
        for waiter in self._waiters:
            if waiter.lsn <= self.shipped_lsn:
                if not waiter.future.done():
                    waiter.future.set_result(waiter.result)
            else:
                waiting.append(waiter)
        self._waiters = waiting

    def _expire(self) -> None:
        """Fail held writes that waited longer than ``ack_timeout_s`` (they are logged here
        and may still be shipped; they were never acknowledged)."""
        now = time.monotonic()
        waiting = []
        for waiter in self._waiters:
            if now - waiter.since >= self.config.ack_timeout_s:
                if not waiter.future.done():
                    waiter.future.set_exception(NotReplicated(
                        f"the write is logged on this node (LSN {waiter.lsn}) but its WAL chunk was not stored "
                        f"within {self.config.ack_timeout_s:g} s ({self.last_error or 'shipping is behind'}); "
                        "it was not acknowledged and may still be replicated"))
            else:
                waiting.append(waiter)
        self._waiters = waiting

    def fail_waiters(self, why: str) -> None:
        """Fail every held write (shutdown without a successful final round, a lost lease,
        another writer): none of them is acknowledged."""
        kind = NotWriter if self.deposed is not None or self.fence() is not None else NotReplicated
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(kind(
                    f"the write is logged on this node (LSN {waiter.lsn}) but was not replicated: {why}"))
        self._waiters = []
