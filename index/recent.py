"""The recent tier: an HNSW graph (hnswlib) plus an exact buffer of vectors not in it yet.

Labels are dense integers handed out in write order; every upsert takes a fresh
label and retires the old one.  Labels below ``hnsw_upto`` have been offered to the
graph; labels from ``hnsw_upto`` on are *pending* and every search scans them exactly,
so a write is searchable the moment it is applied and ingest is not limited by graph
construction.  Records older than the collection's recent threshold are *parked*
instead of entering the graph: migration moves them to the historical tier.

Not thread safe on its own: the owning :class:`~s5vec.index.collection.Collection`
serialises mutations against searches with its readers-writer lock. The one exception is
graph construction: :meth:`RecentTier.plan_drain`, :meth:`RecentTier.insert` and
:meth:`RecentTier.publish` split a drain so that hnswlib's ``add_items`` (about 1 ms of CPU
per 384-d vector) runs *outside* the collection lock, and writes, acknowledgements and
searches go on meanwhile. hnswlib does not allow ``add_items`` beside ``knn_query`` or
``mark_deleted``, so the tier's own ``graph_lock`` guards the graph; it is only taken
while labels are pending (``next > hnsw_upto``): with none pending no insert can be in
flight, since a drain only ever inserts pending labels and holds them pending until it
publishes. A label inserted but not yet published is in the graph *and* in the exact pool
until then; the collection's merge keeps one hit per id, so it is never returned twice.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import faiss
import hnswlib
import msgspec
import numpy as np

from .metrics import raw_distances

_BY_INDEX_FROM: Final = 256
"""Exact scans of more labels than this run in faiss over the rows in place."""
from .payload import PayloadIndex
from .records import Batch, CollectionConfig
from .rwlock import RWLock
from .scratch import graph_file

_INITIAL_CAPACITY: Final = 1024
_UNGUARDED: Final = nullcontext()
GRAPH_CHUNK: Final = 16
"""Vectors per ``add_items`` call of a drain. hnswlib cannot search while it inserts, so
the graph lock is held for one call and a search arriving meanwhile waits for the rest of
it: 16 x ~0.9 ms of CPU (384-d, ef_construction 200) over 2 threads is ~8 ms, more on a
busy host (with 32 the 30-minute soak's searches waited a median 30 ms). hnswlib runs a
call of at most 4 x threads rows on one thread, so a drain's chunks never go below
4 x threads + 1 (:func:`min_chunk`) (a chunk of 8 built the 100k MiniLM graph at half speed)."""
FILTER_EXTRA: Final = 0.5
"""A filtered graph search fetches ``ef * (1 / selectivity + FILTER_EXTRA)`` candidates: as
deep as hnswlib's in-walk filter walks at the same ef (it keeps ``ef`` matching candidates)
plus half an ef more, which lifts recall at 50 % above the in-walk filter's (ef 128: MiniLM
0.9987 vs 0.9980, GloVe 0.9940 vs 0.9910). 0 ties its recall; 1.0 gains only on GloVe
(0.9963) and costs 14 % more time (QPS vs the callback, MiniLM/GloVe: 0.90/1.42 at 0,
0.81/1.09 at 0.5, 0.70/0.89 at 1.0). At 10 % the walk is deep anyway (1.0000 / 0.9997)."""
_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE: Final = msgspec.json.Decoder().decode  # untyped: 2x faster; only dicts are written


def decode_many(raw: Sequence[bytes]) -> list[dict[str, Any]]:
    """Decode many JSON documents in one call, with the cyclic garbage collector paused:
    hundreds of thousands of fresh containers would trigger it dozens of times (2x)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        docs: list[dict[str, Any]] = _DECODE(b"[" + b",".join(raw) + b"]")
    finally:
        if enabled:
            gc.enable()
    return docs


class MetaColumn:
    """Metadata documents of the recent tier as JSON bytes in one growing buffer.

    A million documents as Python dicts cost ~1 KB each and, freed in arbitrary order by
    migration, leave the allocator's arenas too fragmented to return; here a document is
    its bytes plus 12 bytes of offsets.  Reads decode a fresh dict (callers may keep or
    change it).  Replacing a document appends; the old bytes stay until the tier is
    compacted.  A label's mark (``offsets_of``) changes on every write, so a planner can
    tell whether a document was edited after it looked."""

    __slots__ = ("_buf", "_used", "_start", "_size", "_n")

    def __init__(self, capacity: int = _INITIAL_CAPACITY) -> None:
        capacity = max(capacity, 16)
        self._buf = np.zeros(capacity * 64, np.uint8)
        self._used = 0
        self._start = np.zeros(capacity, np.int64)
        self._size = np.full(capacity, -1, np.int32)  # -1: no document (retired label)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _reserve(self, extra_bytes: int, extra_rows: int) -> None:
        if self._used + extra_bytes > len(self._buf):
            grown = np.zeros(max(len(self._buf) * 2, self._used + extra_bytes), np.uint8)
            grown[: self._used] = self._buf[: self._used]
            self._buf = grown
        if self._n + extra_rows > len(self._start):
            rows = max(len(self._start) * 2, self._n + extra_rows)
            start = np.zeros(rows, np.int64)
            start[: self._n] = self._start[: self._n]
            size = np.full(rows, -1, np.int32)
            size[: self._n] = self._size[: self._n]
            self._start, self._size = start, size

    def _write(self, labels: np.ndarray, docs: Sequence[dict[str, Any] | None]) -> None:
        encoded = [b"" if doc is None else _ENCODE(doc) for doc in docs]
        sizes = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
        self._reserve(int(sizes.sum()), 0)
        starts = self._used + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        blob = np.frombuffer(b"".join(encoded), np.uint8)
        self._buf[self._used:self._used + len(blob)] = blob
        self._used += len(blob)
        self._start[labels] = starts
        self._size[labels] = np.where([doc is None for doc in docs], -1, sizes).astype(np.int32)

    def extend(self, docs: Sequence[dict[str, Any] | None]) -> None:
        first = self._n
        self._reserve(0, len(docs))
        self._n += len(docs)
        self._write(np.arange(first, first + len(docs)), docs)

    def __getitem__(self, label: int) -> dict[str, Any] | None:
        size = int(self._size[label])
        if size < 0:
            return None
        start = int(self._start[label])
        doc: dict[str, Any] = _DECODE(memoryview(self._buf)[start:start + size])
        return doc

    def __setitem__(self, label: int, doc: dict[str, Any] | None) -> None:
        self._write(np.asarray([label]), [doc])

    def clear(self, labels: np.ndarray) -> None:
        self._size[labels] = -1

    def raw_many(self, labels: np.ndarray) -> list[bytes]:
        """Encoded documents at ``labels`` (``b"{}"`` for none)."""
        buf = memoryview(self._buf)
        starts, sizes = self._start[labels].tolist(), self._size[labels].tolist()
        return [bytes(buf[a:a + b]) if b >= 0 else b"{}" for a, b in zip(starts, sizes)]

    def many(self, labels: np.ndarray) -> list[dict[str, Any]]:
        """Documents at ``labels`` (``{}`` for none), decoded in one call: a migration
        reads hundreds of thousands."""
        return decode_many(self.raw_many(labels))

    def offsets_of(self, labels: np.ndarray) -> np.ndarray:
        """Version marks of the documents at ``labels`` (see the class docstring)."""
        return np.where(self._size[labels] < 0, -1, self._start[labels])

    def to_list(self, n: int) -> list[dict[str, Any] | None]:
        return [self[label] for label in range(n)]

    def nbytes(self) -> int:
        return int(self._buf.nbytes + self._start.nbytes + self._size.nbytes)


def min_chunk(num_threads: int) -> int:
    """Fewest rows for which hnswlib's ``add_items`` uses ``num_threads`` threads."""
    return 4 * max(1, num_threads) + 1


@dataclass(slots=True)
class DrainPlan:
    """Pending labels ``start .. end`` of one drain: ``fresh`` go into the graph (their
    vectors copied under the collection lock), ``old`` are parked for migration."""

    start: int
    end: int
    fresh: np.ndarray
    vectors: np.ndarray
    old: np.ndarray

    def chunks(self, size: int) -> Iterator[DrainPlan]:
        """Consecutive label ranges of at most ``size`` labels, in order."""
        for a in range(self.start, self.end, size):
            b = min(a + size, self.end)
            lo, hi = np.searchsorted(self.fresh, [a, b])
            olo, ohi = np.searchsorted(self.old, [a, b])
            yield DrainPlan(a, b, self.fresh[lo:hi], self.vectors[lo:hi], self.old[olo:ohi])


class RecentTier:
    """Mutable HNSW tier of one collection (see module docstring)."""

    def __init__(self, config: CollectionConfig, scratch_dir: Path, capacity: int = _INITIAL_CAPACITY) -> None:
        self.config = config
        self._scratch = Path(scratch_dir)
        self.dim = config.dimension
        self.space = "l2" if config.metric == "l2" else "ip"
        self.capacity = max(capacity, 16)
        self.vectors = np.zeros((self.capacity, self.dim), np.float32)
        self.timestamps = np.zeros(self.capacity, np.float64)
        self.live = np.zeros(self.capacity, bool)
        self.ids: list[str | None] = []
        self.metadata = MetaColumn(self.capacity)
        self.labels: dict[str, int] = {}
        self.next = 0
        self.hnsw_upto = 0
        self.hnsw_live = 0
        self.parked: set[int] = set()
        self.hnsw = self._new_hnsw(self.capacity)
        self.ef = config.ef_search
        self.tombstones = 0
        self.payload = PayloadIndex(config.payload_fields, self.capacity)
        self.graph_lock = RWLock()

    def _graph(self, write: bool = False) -> AbstractContextManager[None]:
        """Guard a graph call against an insert running outside the collection lock. Free
        when nothing is pending: no insert can then be in flight (see module docstring)."""
        if self.next == self.hnsw_upto:
            return _UNGUARDED
        return self.graph_lock.write() if write else self.graph_lock.read()

    def _new_hnsw(self, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space=self.space, dim=self.dim)
        index.init_index(max_elements=capacity, M=self.config.hnsw_m,
                         ef_construction=self.config.ef_construction, random_seed=100)
        index.set_ef(self.config.ef_search)
        return index

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def pending(self) -> int:
        """Vectors acknowledged but neither in the graph nor parked."""
        return self.next - self.hnsw_upto

    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        vectors = np.zeros((capacity, self.dim), np.float32)
        vectors[: self.next] = self.vectors[: self.next]
        timestamps = np.zeros(capacity, np.float64)
        timestamps[: self.next] = self.timestamps[: self.next]
        live = np.zeros(capacity, bool)
        live[: self.next] = self.live[: self.next]
        self.vectors, self.timestamps, self.live, self.capacity = vectors, timestamps, live, capacity

    def retire(self, label: int) -> None:
        """Forget the record at ``label`` (it was replaced, deleted or migrated)."""
        self.live[label] = False
        record_id = self.ids[label]
        if record_id is not None and self.labels.get(record_id) == label:
            del self.labels[record_id]
        self.ids[label] = None
        self.metadata.clear(np.asarray([label]))
        self.tombstones += 1
        self.payload.clear([label])
        if label < self.hnsw_upto:
            if self._in_graph(label):
                with self._graph(write=True):
                    self.hnsw.mark_deleted(label)
                self.hnsw_live -= 1
            else:
                self.parked.discard(label)

    def retire_many(self, labels: np.ndarray) -> None:
        """:meth:`retire` for many labels at once (migration moves thousands)."""
        labels = labels[self.live[labels]]
        if not len(labels):
            return
        self.live[labels] = False
        self.payload.clear(labels)
        self.metadata.clear(labels)
        index = self.labels
        in_graph = []
        for label in labels.tolist():
            record_id = self.ids[label]
            if record_id is not None and index.get(record_id) == label:
                del index[record_id]
            self.ids[label] = None
            if label < self.hnsw_upto:
                if label in self.parked:
                    self.parked.discard(label)
                else:
                    in_graph.append(label)
        if in_graph:
            with self._graph(write=True):
                for label in in_graph:
                    self.hnsw.mark_deleted(label)
            self.hnsw_live -= len(in_graph)
        self.tombstones += len(labels)

    def _in_graph(self, label: int) -> bool:
        # parked labels lie below hnsw_upto but were never added to the graph
        return label not in self.parked

    def append(self, batch: Batch) -> None:
        """Add validated records with fresh labels; callers retire older versions first."""
        n = len(batch)
        self._grow(self.next + n)
        start = self.next
        self.vectors[start:start + n] = batch.vectors
        self.timestamps[start:start + n] = batch.timestamps
        self.live[start:start + n] = True
        self.ids.extend(batch.ids)
        self.metadata.extend(batch.metadata)
        self.next = start + n
        labels = self.labels
        for offset, record_id in enumerate(batch.ids):
            old = labels.get(record_id)
            if old is not None:  # the same id twice in one batch: the later one wins
                self.retire(old)
            labels[record_id] = start + offset
        self.payload.set(np.arange(start, start + n), batch.metadata)

    def set_metadata(self, label: int, metadata: dict[str, Any]) -> None:
        self.metadata[label] = metadata
        self.payload.set([label], [metadata])

    def drain(self, max_items: int, num_threads: int, cutoff: float) -> int:
        """Move up to ``max_items`` pending vectors into the graph; records older than
        ``cutoff`` are parked for migration instead. In one step, for a tier no other
        thread sees (the collection's drain splits it, see the module docstring)."""
        plan = self.plan_drain(max_items, cutoff)
        if plan is None:
            return 0
        self.insert(plan, num_threads)
        self.publish(plan)
        return plan.end - plan.start

    def plan_drain(self, max_items: int, cutoff: float) -> DrainPlan | None:
        """The next up to ``max_items`` pending labels, split into graph-bound and parked
        ones (collection write lock held; one drain at a time). Grows the graph first."""
        start, end = self.hnsw_upto, min(self.next, self.hnsw_upto + max_items)
        if start >= end:
            return None
        if end > self.hnsw.get_max_elements():
            with self.graph_lock.write():
                self.hnsw.resize_index(self.capacity)
        span = np.arange(start, end)
        live = self.live[start:end]
        old = live & (self.timestamps[start:end] < cutoff)
        fresh = span[live & ~old]
        return DrainPlan(start, end, fresh, self.vectors[fresh], span[old])

    def insert(self, plan: DrainPlan, num_threads: int) -> None:
        """Add the plan's fresh vectors to the graph in one ``add_items`` call, holding only
        the graph lock (callers split a plan with :meth:`DrainPlan.chunks` to bound it)."""
        if len(plan.fresh):
            with self.graph_lock.write():
                self.hnsw.add_items(plan.vectors, plan.fresh, num_threads=num_threads)

    def publish(self, plan: DrainPlan) -> None:
        """Make an inserted plan (or chunk, in label order) visible to searches (collection
        write lock held): labels retired while it was inserted are deleted from the graph
        now, and only records still live are parked."""
        fresh, old = plan.fresh, plan.old
        dead = fresh[~self.live[fresh]] if len(fresh) else fresh
        if len(dead):
            with self.graph_lock.write():
                for label in dead.tolist():
                    self.hnsw.mark_deleted(label)
        if len(old):
            self.parked.update(old[self.live[old]].tolist())
        self.hnsw_upto = plan.end
        self.hnsw_live += len(fresh) - len(dead)

    def exact_pool(self) -> np.ndarray:
        """Labels every search scans exactly: the pending buffer and parked records."""
        pending = np.arange(self.hnsw_upto, self.next)
        if self.parked:
            pending = np.concatenate([np.fromiter(self.parked, np.int64, len(self.parked)), pending])
        return pending[self.live[pending]] if len(pending) else pending

    def distances(self, labels: np.ndarray, query: np.ndarray) -> np.ndarray:
        return raw_distances(self.space, self.vectors[labels], query)

    def exact(self, labels: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not len(labels):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(labels) > _BY_INDEX_FROM and k < len(labels):
            return self._exact_by_index(labels, query, k)
        dist = self.distances(labels, query)
        if len(labels) > k:
            part = np.argpartition(dist, k - 1)[:k]
            labels, dist = labels[part], dist[part]
        return labels.astype(np.int64), dist

    def _exact_by_index(self, labels: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of many ``labels`` scored by faiss in place (SIMD, no gathered copy:
        gathering 3,000 MiniLM rows cost 1 ms of a 1.3 ms filtered scan)."""
        ids = np.ascontiguousarray(labels, np.int64)
        q = np.ascontiguousarray(query, np.float32).reshape(1, -1)
        vals = np.empty((1, k), np.float32)
        found = np.empty((1, k), np.int64)
        knn = faiss.knn_L2sqr_by_idx if self.space == "l2" else faiss.knn_inner_products_by_idx
        knn(faiss.swig_ptr(q), faiss.swig_ptr(self.vectors), faiss.swig_ptr(ids), self.dim, 1, len(self.vectors),
            len(ids), k, faiss.swig_ptr(vals), faiss.swig_ptr(found), 0)
        keep = found[0] >= 0
        dist = vals[0][keep] if self.space == "l2" else np.float32(1.0) - vals[0][keep]
        return found[0][keep], dist

    def graph(self, queries: np.ndarray, k: int, num_threads: int = 1) -> tuple[np.ndarray, np.ndarray] | None:
        """Graph top-``k`` for each query row, or None when the graph cannot return k
        live results (too many deletions: callers fall back to exact)."""
        k = min(k, self.hnsw_live)
        if k <= 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        try:
            with self._graph():
                labels, dist = self.hnsw.knn_query(queries, k=k, num_threads=num_threads)
        except RuntimeError:
            return None
        return labels.astype(np.int64), dist

    def graph_filtered(self, query: np.ndarray, k: int, mask: np.ndarray,
                       allowed: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Graph top-``k`` for one query among the labels where the bool array ``mask``
        (indexed by label) is set, best first; ``allowed`` counts the graph labels it sets.

        The walk is unfiltered but ``ef * (1 / selectivity + FILTER_EXTRA)`` deep (hnswlib's
        filter callback would cost a Python call per visited node), and it is repeated twice
        as deep while fewer than ``min(k, allowed)`` candidates match, so it returns k
        matching records whenever k exist. None when the graph cannot return that many live
        results (callers fall back to exact)."""
        live = self.hnsw_live
        want = min(k, allowed)
        if live <= 0 or want <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        depth = max(self.ef, k) * (live / min(allowed, live) + FILTER_EXTRA)
        fetch = min(live, max(k, math.ceil(depth)))
        while True:
            try:
                with self._graph():
                    found, dist = self.hnsw.knn_query(query, k=fetch, num_threads=1)
            except RuntimeError:
                return None
            labels = found[0].astype(np.int64)
            keep = mask[labels]
            if int(np.count_nonzero(keep)) >= want or fetch >= live:
                return labels[keep][:k], dist[0][keep][:k]
            fetch = min(live, fetch * 2)

    def graph_live_labels(self) -> np.ndarray:
        labels = np.flatnonzero(self.live[: self.hnsw_upto])
        if self.parked:
            labels = np.setdiff1d(labels, np.fromiter(self.parked, np.int64, len(self.parked)), assume_unique=True)
        return labels

    def stats(self) -> dict[str, Any]:
        return {"recent": len(self.labels), "indexed": self.hnsw_live, "pending": self.pending,
                "parked": len(self.parked), "tombstones": self.tombstones,
                "capacity": self.capacity}

    # --------------------------------------------------------------- persistence
    def to_parts(self) -> dict[str, Any]:
        """Plain-data copy of the tier (the graph as hnswlib's own file bytes)."""
        n = self.next
        hnsw_bytes = None
        if self.hnsw_upto:
            with graph_file(self._scratch) as path:
                with self._graph():
                    self.hnsw.save_index(path)
                hnsw_bytes = Path(path).read_bytes()
        return {
            "next_label": n, "hnsw_upto": self.hnsw_upto, "tombstones": self.tombstones,
            "ids": self.ids[:n], "metadata": self.metadata.to_list(n),
            "vectors": self.vectors[:n].tobytes(), "timestamps": self.timestamps[:n].tobytes(),
            "live": np.packbits(self.live[:n]).tobytes(), "hnsw": hnsw_bytes,
            "parked": np.asarray(sorted(self.parked), np.int64).tobytes(),
        }

    @classmethod
    def from_parts(cls, config: CollectionConfig, parts: dict[str, Any], scratch_dir: Path) -> RecentTier:
        n = int(parts["next_label"])
        self = cls(config, scratch_dir, capacity=max(_INITIAL_CAPACITY, n * 5 // 4 + 16))
        vectors = np.frombuffer(parts["vectors"], np.float32)
        if vectors.size != n * self.dim or len(parts["ids"]) != n or len(parts["metadata"]) != n:
            raise ValueError(f"snapshot of collection {config.name!r} is inconsistent")
        self.vectors[:n] = vectors.reshape(n, self.dim)
        self.timestamps[:n] = np.frombuffer(parts["timestamps"], np.float64)
        self.live[:n] = np.unpackbits(np.frombuffer(parts["live"], np.uint8), count=n).astype(bool)
        self.ids = list(parts["ids"])
        self.metadata = MetaColumn(n)
        self.metadata.extend(parts["metadata"])
        self.next = n
        self.labels = {rid: label for label, rid in enumerate(self.ids) if rid is not None}
        self.tombstones = int(parts.get("tombstones", 0))
        self.parked = set(np.frombuffer(parts.get("parked") or b"", np.int64).tolist())
        live_labels = np.flatnonzero(self.live[:n])
        self.payload.set(live_labels, [parts["metadata"][i] or {} for i in live_labels.tolist()])
        if parts.get("hnsw") is not None and parts["hnsw_upto"]:
            with graph_file(scratch_dir) as path:
                with open(path, "wb") as fh:
                    fh.write(parts["hnsw"])
                index = hnswlib.Index(space=self.space, dim=self.dim)
                index.load_index(path, max_elements=self.capacity)
                index.set_ef(config.ef_search)
            self.hnsw = index
            self.hnsw_upto = int(parts["hnsw_upto"])
            self.hnsw_live = len(self.graph_live_labels())
        return self
