"""One collection: records, their vectors and an HNSW graph plus a small exact buffer.

Labels are dense integers handed out in write order; every upsert takes a fresh
label and retires the old one.  Labels below ``hnsw_upto`` have been offered to the
HNSW graph; labels from ``hnsw_upto`` to ``next_label`` form the *pending* buffer that
every search scans exactly, so a write is searchable the moment it is applied and
ingest is not limited by graph construction speed (see DESIGN.md).

Thread safety: ``apply_*``, ``drain`` and ``restore`` take the write lock; ``search``,
``get`` and ``snapshot`` take the read lock, so searches run in parallel threads.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import hnswlib
import msgspec
import numpy as np

from .errors import CollectionExists, DimensionMismatch, InvalidRecord, RecordNotFound
from .filters import Predicate, parse_datetime
from .rwlock import RWLock
from .schema import SCHEMAS, video_nft_key

METRICS: Final = ("cosine", "l2", "ip")
NAME_RE: Final = re.compile(r"[a-z0-9_-]{1,64}")
MAX_DIMENSION: Final = 4096
MAX_ID_BYTES: Final = 256
MAX_METADATA_BYTES: Final = 64 * 1024
MAX_K: Final = 1000
EXACT_FILTER_LIMIT: Final = 20_000
_INITIAL_CAPACITY: Final = 1024
_JSON = msgspec.json.Encoder()
_F32_MAX: Final = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    """A collection's immutable definition."""

    name: str
    dimension: int
    metric: str = "cosine"
    schema: str | None = None
    hnsw_m: int = 16
    ef_construction: int = 200
    ef_search: int = 64

    def validate(self) -> None:
        """Raise InvalidRecord naming the first bad field."""
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise InvalidRecord("name", "must match [a-z0-9_-]{1,64}")
        if isinstance(self.dimension, bool) or not isinstance(self.dimension, int) or not 1 <= self.dimension <= MAX_DIMENSION:
            raise InvalidRecord("dimension", f"must be an integer from 1 to {MAX_DIMENSION}")
        if self.metric not in METRICS:
            raise InvalidRecord("metric", f"must be one of {', '.join(METRICS)}")
        if self.schema is not None and self.schema not in SCHEMAS:
            raise InvalidRecord("schema", f"unknown schema; known: {', '.join(SCHEMAS)}")
        if not 2 <= self.hnsw_m <= 128:
            raise InvalidRecord("hnsw_m", "must be from 2 to 128")
        if not 8 <= self.ef_construction <= 2000:
            raise InvalidRecord("ef_construction", "must be from 8 to 2000")
        if not 1 <= self.ef_search <= 5000:
            raise InvalidRecord("ef_search", "must be from 1 to 5000")

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CollectionConfig:
        return cls(**{k: v for k, v in raw.items() if k in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class RawItem:
    """An upsert as the caller sent it, before validation."""

    id: str | int | None
    vector: Sequence[float] | np.ndarray
    metadata: dict[str, Any] | None = None
    timestamp: str | float | int | None = None


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why one item of a batch was rejected."""

    index: int
    id: str | None
    code: str
    message: str


@dataclass(slots=True)
class Batch:
    """Validated upserts, ready for the WAL and for :meth:`Collection.apply_upsert`."""

    ids: list[str]
    vectors: np.ndarray
    metadata: list[dict[str, Any]]
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(slots=True)
class Hit:
    """One search result or fetched record (not frozen: it is built on the search hot path)."""

    id: str
    distance: float
    score: float
    metadata: dict[str, Any] | None = None
    vector: np.ndarray | None = None
    timestamp: float | None = None


@dataclass(slots=True)
class CollectionSnapshot:
    """A collection's full state at one instant, as plain data (no pickles)."""

    config: CollectionConfig
    next_label: int
    hnsw_upto: int
    ids: list[str | None]
    metadata: list[dict[str, Any] | None]
    vectors: bytes
    timestamps: bytes
    live: bytes
    hnsw: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_timestamp(value: str | float | int | None, now: float) -> float:
    """Caller timestamp (ISO 8601 or Unix seconds; > 1e11 means milliseconds) → seconds."""
    if value is None:
        return now
    if isinstance(value, bool):
        raise InvalidRecord("timestamp", "must be an ISO 8601 string or Unix seconds")
    if isinstance(value, (int, float)):
        seconds = float(value) / 1000.0 if abs(value) > 1e11 else float(value)
        if not math.isfinite(seconds):
            raise InvalidRecord("timestamp", "must be finite")
        return seconds
    parsed = parse_datetime(value)
    if parsed is None:
        raise InvalidRecord("timestamp", f"{value[:40]!r} is not an ISO 8601 date-time")
    return parsed.timestamp()


def normalize_id(value: str | int | None) -> str:
    if isinstance(value, bool) or value is None:
        raise InvalidRecord("id", "is required (string or integer)")
    text = str(value) if isinstance(value, int) else value
    if not isinstance(text, str) or not text:
        raise InvalidRecord("id", "must be a non-empty string or an integer")
    if len(text.encode()) > MAX_ID_BYTES:
        raise InvalidRecord("id", f"is longer than {MAX_ID_BYTES} bytes")
    return text


def prepare_vectors(config: CollectionConfig, rows: np.ndarray) -> np.ndarray:
    """Check shape and values of float32 rows; normalise for cosine. Raises on bad input."""
    if rows.ndim != 2 or rows.shape[1] != config.dimension:
        got = rows.shape[-1] if rows.ndim else 0
        raise DimensionMismatch(f"vector has {got} dimensions, collection {config.name!r} has {config.dimension}")
    if not np.isfinite(rows).all():
        raise InvalidRecord("vector", "contains NaN or infinite values (or values beyond float32 range)")
    if config.metric == "cosine":
        norms = np.linalg.norm(rows, axis=1)
        if (norms == 0).any():
            raise InvalidRecord("vector", "has zero length; cosine similarity is undefined")
        rows = rows / norms[:, None]
    return np.ascontiguousarray(rows, dtype=np.float32)


def _prepare_one(config: CollectionConfig, item: RawItem, now: float) -> tuple[str, np.ndarray, dict[str, Any], float]:
    metadata = item.metadata if item.metadata is not None else {}
    if not isinstance(metadata, dict):
        raise InvalidRecord("metadata", "must be a JSON object")
    if config.schema is not None:
        metadata = SCHEMAS[config.schema](metadata)
    if config.schema == "video_nft" and item.id is None:
        record_id = video_nft_key(metadata)
    else:
        record_id = normalize_id(item.id)
        if config.schema == "video_nft" and record_id != video_nft_key(metadata):
            raise InvalidRecord("id", f"must be '<address>:<id>' ({video_nft_key(metadata)!r}) or omitted")
    if len(_JSON.encode(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRecord("metadata", f"is larger than {MAX_METADATA_BYTES} bytes encoded")
    vector = item.vector
    if isinstance(vector, np.ndarray):
        if vector.ndim != 1:
            raise InvalidRecord("vector", "must be a flat array of numbers")
        row = vector.astype(np.float64)
    else:
        if len(vector) == 0:
            raise InvalidRecord("vector", "is empty")
        try:
            row = np.fromiter(vector, dtype=np.float64, count=len(vector))
        except (TypeError, ValueError):
            raise InvalidRecord("vector", "must be an array of numbers") from None
    if len(row) != config.dimension:
        raise DimensionMismatch(f"vector has {len(row)} dimensions, collection {config.name!r} has {config.dimension}")
    return record_id, row, metadata, parse_timestamp(item.timestamp, now)


def prepare_batch(config: CollectionConfig, items: Sequence[RawItem]) -> tuple[Batch, list[ItemError]]:
    """Validate ``items``; the good ones form the batch, the bad ones come back as errors.

    Pure function, safe on any thread. A later item with the same id wins. Vector
    checks (finite, float32 range, non-zero for cosine) run once over the whole batch.
    """
    now = time.time()
    ids: list[str] = []
    rows: list[np.ndarray] = []
    metas: list[dict[str, Any]] = []
    stamps: list[float] = []
    positions: list[int] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            record_id, row, meta, stamp = _prepare_one(config, item, now)
        except InvalidRecord as exc:
            errors.append(ItemError(index, _safe_id(item.id), "invalid_request", str(exc)))
            continue
        except DimensionMismatch as exc:
            errors.append(ItemError(index, _safe_id(item.id), "dimension_mismatch", str(exc)))
            continue
        ids.append(record_id)
        rows.append(row)
        metas.append(meta)
        stamps.append(stamp)
        positions.append(index)
    if not rows:
        return Batch([], np.zeros((0, config.dimension), np.float32), [], np.zeros(0)), errors
    matrix = np.stack(rows)
    keep = np.abs(matrix).max(axis=1) <= _F32_MAX  # False for NaN too
    reason = "contains NaN or infinite values (or values beyond float32 range)"
    if config.metric == "cosine":
        squares = np.einsum("ij,ij->i", np.where(keep[:, None], matrix, 0.0), np.where(keep[:, None], matrix, 0.0))
        zero = keep & (squares == 0.0)
        if zero.any():
            keep &= ~zero
        matrix = matrix / np.sqrt(np.where(squares > 0, squares, 1.0))[:, None]
    if not keep.all():
        for n in np.flatnonzero(~keep).tolist():
            message = reason if not np.isfinite(rows[n]).all() or np.abs(rows[n]).max() > _F32_MAX \
                else "has zero length; cosine similarity is undefined"
            errors.append(ItemError(positions[n], ids[n], "invalid_request", f"vector: {message}"))
        good = np.flatnonzero(keep).tolist()
        ids, metas, stamps = [ids[n] for n in good], [metas[n] for n in good], [stamps[n] for n in good]
        matrix = matrix[keep]
        errors.sort(key=lambda e: e.index)
    vectors = np.ascontiguousarray(matrix, dtype=np.float32)
    return Batch(ids, vectors, metas, np.asarray(stamps, dtype=np.float64)), errors


def _safe_id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value[:MAX_ID_BYTES] if isinstance(value, str) else None


class Collection:
    """Records, vectors and the HNSW tier of one collection (see module docstring)."""

    def __init__(self, config: CollectionConfig, scratch_dir: Path, capacity: int = _INITIAL_CAPACITY) -> None:
        config.validate()
        self.config = config
        self._scratch = Path(scratch_dir)
        self._lock = RWLock()
        self._dim = config.dimension
        self._space = "l2" if config.metric == "l2" else "ip"
        self._capacity = max(capacity, 16)
        self._vectors = np.zeros((self._capacity, self._dim), np.float32)
        self._timestamps = np.zeros(self._capacity, np.float64)
        self._live = np.zeros(self._capacity, bool)
        self._ids: list[str | None] = []
        self._metadata: list[dict[str, Any] | None] = []
        self._labels: dict[str, int] = {}
        self._next = 0
        self._hnsw_upto = 0
        self._hnsw_live = 0
        self._hnsw = self._new_hnsw(self._capacity)
        self._ef = config.ef_search
        self.tombstones = 0

    def _new_hnsw(self, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space=self._space, dim=self._dim)
        index.init_index(max_elements=capacity, M=self.config.hnsw_m,
                         ef_construction=self.config.ef_construction, random_seed=100)
        index.set_ef(self.config.ef_search)
        return index

    # ----------------------------------------------------------------- mutation
    def _grow(self, needed: int) -> None:
        if needed <= self._capacity:
            return
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        vectors = np.zeros((capacity, self._dim), np.float32)
        vectors[: self._next] = self._vectors[: self._next]
        timestamps = np.zeros(capacity, np.float64)
        timestamps[: self._next] = self._timestamps[: self._next]
        live = np.zeros(capacity, bool)
        live[: self._next] = self._live[: self._next]
        self._vectors, self._timestamps, self._live, self._capacity = vectors, timestamps, live, capacity

    def _retire(self, label: int) -> None:
        self._live[label] = False
        self._ids[label] = None
        self._metadata[label] = None
        self.tombstones += 1
        if label < self._hnsw_upto:
            self._hnsw.mark_deleted(label)
            self._hnsw_live -= 1

    def apply_upsert(self, batch: Batch) -> None:
        """Insert or replace every record of a validated batch (write lock)."""
        n = len(batch)
        if not n:
            return
        with self._lock.write():
            self._grow(self._next + n)
            start = self._next
            self._vectors[start:start + n] = batch.vectors
            self._timestamps[start:start + n] = batch.timestamps
            self._live[start:start + n] = True
            self._ids.extend(batch.ids)
            self._metadata.extend(batch.metadata)
            self._next = start + n
            labels = self._labels
            for offset, record_id in enumerate(batch.ids):
                old = labels.get(record_id)
                if old is not None:
                    self._retire(old)
                labels[record_id] = start + offset

    def apply_delete(self, ids: Sequence[str]) -> int:
        """Delete records by id (write lock); returns how many existed."""
        removed = 0
        with self._lock.write():
            for record_id in ids:
                label = self._labels.pop(record_id, None)
                if label is not None:
                    self._retire(label)
                    removed += 1
        return removed

    def apply_metadata(self, record_id: str, metadata: dict[str, Any]) -> None:
        """Replace a record's metadata in place (write lock)."""
        with self._lock.write():
            label = self._labels.get(record_id)
            if label is None:
                raise RecordNotFound(f"no record {record_id!r} in collection {self.config.name!r}")
            self._metadata[label] = metadata

    @property
    def pending(self) -> int:
        """Vectors acknowledged but not yet in the HNSW graph."""
        return self._next - self._hnsw_upto

    def drain(self, max_items: int = 256, num_threads: int = 2) -> int:
        """Move up to ``max_items`` pending vectors into the HNSW graph (write lock)."""
        with self._lock.write():
            start, end = self._hnsw_upto, min(self._next, self._hnsw_upto + max_items)
            if start >= end:
                return 0
            if end > self._hnsw.get_max_elements():
                self._hnsw.resize_index(self._capacity)
            labels = np.flatnonzero(self._live[start:end]) + start
            if len(labels):
                self._hnsw.add_items(self._vectors[labels], labels, num_threads=num_threads)
            self._hnsw_upto = end
            self._hnsw_live += len(labels)
            return end - start

    # ------------------------------------------------------------------- reads
    def __len__(self) -> int:
        return len(self._labels)

    def contains(self, record_id: str) -> bool:
        return record_id in self._labels

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.config.name, "dimension": self._dim, "metric": self.config.metric,
            "schema": self.config.schema, "count": len(self._labels), "indexed": self._hnsw_live,
            "pending": self.pending, "tombstones": self.tombstones, "capacity": self._capacity,
        }

    def get(self, record_id: str, include_vector: bool = True) -> Hit:
        """Fetch one live record; raises RecordNotFound."""
        with self._lock.read():
            label = self._labels.get(record_id)
            if label is None:
                raise RecordNotFound(f"no record {record_id!r} in collection {self.config.name!r}")
            vector = self._vectors[label].copy() if include_vector else None
            return Hit(record_id, 0.0, 1.0, self._metadata[label], vector, float(self._timestamps[label]))

    def _distances(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        if self._space == "ip":
            return np.float32(1.0) - rows @ query
        diff = rows - query
        return np.einsum("ij,ij->i", diff, diff)

    def _exact(self, labels: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not len(labels):
            return labels.astype(np.int64), np.zeros(0, np.float32)
        dist = self._distances(self._vectors[labels], query)
        if len(labels) > k:
            part = np.argpartition(dist, k - 1)[:k]
            labels, dist = labels[part], dist[part]
        return labels.astype(np.int64), dist

    def _graph(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._hnsw_live)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        try:
            if allowed is None:
                labels, dist = self._hnsw.knn_query(query, k=k, num_threads=1)
            else:
                flags = allowed.tolist()
                labels, dist = self._hnsw.knn_query(query, k=k, num_threads=1, filter=flags.__getitem__)
            return labels[0].astype(np.int64), dist[0]
        except RuntimeError:
            # Too many deletions for the graph to return k live results: be exact instead.
            mask = self._live[: self._hnsw_upto] if allowed is None else allowed[: self._hnsw_upto]
            return self._exact(np.flatnonzero(mask), query, k)

    def _use_ef(self, ef: int | None, k: int) -> None:
        # hnswlib keeps ef per index, not per query: changing it must not overlap searches.
        want = max(ef or self.config.ef_search, k)
        if want != self._ef:
            with self._lock.write():
                self._hnsw.set_ef(want)
                self._ef = want

    def search(self, query: np.ndarray, k: int = 10, ef: int | None = None,
               predicate: Predicate | None = None, score_threshold: float | None = None,
               include_metadata: bool = True, include_vector: bool = False) -> list[Hit]:
        """Top-``k`` live records nearest to ``query`` (validated, normalised), best first."""
        if predicate is None:
            return self.search_batch(query[None, :], k, ef, score_threshold, include_metadata, include_vector)[0]
        self._use_ef(ef, k)
        with self._lock.read():
            n, upto = self._next, self._hnsw_upto
            metadata, live = self._metadata, self._live
            allowed = np.zeros(n, bool)
            for label in np.flatnonzero(live[:n]).tolist():
                if predicate(metadata[label] or {}):
                    allowed[label] = True
            if int(allowed.sum()) <= EXACT_FILTER_LIMIT:
                labels, dist = self._exact(np.flatnonzero(allowed), query, k)
            else:
                g_labels, g_dist = self._graph(query, k, allowed)
                p_labels, p_dist = self._exact(np.flatnonzero(allowed[upto:n]) + upto, query, k)
                labels, dist = np.concatenate([g_labels, p_labels]), np.concatenate([g_dist, p_dist])
            order = np.argsort(dist, kind="stable")[:k]
            return self._hits(labels[order], dist[order], score_threshold, include_metadata, include_vector)

    def search_batch(self, queries: np.ndarray, k: int = 10, ef: int | None = None,
                     score_threshold: float | None = None, include_metadata: bool = True,
                     include_vector: bool = False, num_threads: int = 2) -> list[list[Hit]]:
        """Unfiltered top-``k`` for each row of ``queries``: one graph call for all of them
        (hnswlib spreads it over ``num_threads`` without the GIL) and one exact pass over
        the pending buffer."""
        self._use_ef(ef, k)
        count = len(queries)
        with self._lock.read():
            n, upto = self._next, self._hnsw_upto
            kk = min(k, self._hnsw_live)
            graph: tuple[np.ndarray, np.ndarray] | None = None
            if kk > 0:
                try:
                    labels, dist = self._hnsw.knn_query(queries, k=kk, num_threads=min(num_threads, count))
                    graph = (labels.astype(np.int64), dist)
                except RuntimeError:
                    graph = None  # too many deletions for k live results: per-query fallback below
            pending = np.flatnonzero(self._live[upto:n]) + upto if n > upto else None
            results = []
            for row in range(count):
                if graph is not None:
                    labels, dist = graph[0][row], graph[1][row]
                else:
                    labels, dist = self._graph(queries[row], k, None)
                if pending is not None and len(pending):
                    p_labels, p_dist = self._exact(pending, queries[row], k)
                    labels, dist = np.concatenate([labels, p_labels]), np.concatenate([dist, p_dist])
                    order = np.argsort(dist, kind="stable")[:k]
                    labels, dist = labels[order], dist[order]
                results.append(self._hits(labels, dist, score_threshold, include_metadata, include_vector))
            return results

    def _hits(self, labels: np.ndarray, dist: np.ndarray, threshold: float | None,
              include_metadata: bool, include_vector: bool) -> list[Hit]:
        metric = self.config.metric
        ids, metadata, stamps = self._ids, self._metadata, self._timestamps
        label_list = labels.tolist()
        raw = dist.tolist()
        if metric == "cosine":
            distances = raw
            scores = [1.0 - d * 0.5 for d in raw]
            scores = [0.0 if s < 0.0 else 1.0 if s > 1.0 else s for s in scores]
        elif metric == "ip":
            distances, scores = raw, [1.0 - d for d in raw]
        else:
            distances = [math.sqrt(d) if d > 0.0 else 0.0 for d in raw]
            scores = [1.0 / (1.0 + d) for d in distances]
        hits = []
        for label, distance, score in zip(label_list, distances, scores):
            record_id = ids[label]
            if record_id is None or (threshold is not None and score < threshold):
                continue
            hits.append(Hit(record_id, distance, score, metadata[label] if include_metadata else None,
                            self._vectors[label].copy() if include_vector else None, float(stamps[label])))
        return hits

    # --------------------------------------------------------------- persistence
    def snapshot(self) -> CollectionSnapshot:
        """Copy the whole state (read lock: searches continue, mutations wait)."""
        with self._lock.read():
            n = self._next
            hnsw_bytes = None
            if self._hnsw_upto:
                fd, path = tempfile.mkstemp(prefix="hnsw-", suffix=".bin", dir=self._scratch)
                os.close(fd)
                try:
                    self._hnsw.save_index(path)
                    hnsw_bytes = Path(path).read_bytes()
                finally:
                    os.unlink(path)
            return CollectionSnapshot(
                config=self.config, next_label=n, hnsw_upto=self._hnsw_upto,
                ids=self._ids[:n], metadata=self._metadata[:n],
                vectors=self._vectors[:n].tobytes(), timestamps=self._timestamps[:n].tobytes(),
                live=np.packbits(self._live[:n]).tobytes(), hnsw=hnsw_bytes,
                extra={"tombstones": self.tombstones},
            )

    @classmethod
    def restore(cls, snap: CollectionSnapshot, scratch_dir: Path) -> Collection:
        """Rebuild a collection from :meth:`snapshot` output; compacts nothing."""
        n = snap.next_label
        self = cls(snap.config, scratch_dir, capacity=max(_INITIAL_CAPACITY, n * 5 // 4 + 16))
        dim = snap.config.dimension
        vectors = np.frombuffer(snap.vectors, np.float32)
        if vectors.size != n * dim or len(snap.ids) != n or len(snap.metadata) != n:
            raise ValueError(f"snapshot of {snap.config.name!r} is inconsistent")
        self._vectors[:n] = vectors.reshape(n, dim)
        self._timestamps[:n] = np.frombuffer(snap.timestamps, np.float64)
        self._live[:n] = np.unpackbits(np.frombuffer(snap.live, np.uint8), count=n).astype(bool)
        self._ids = list(snap.ids)
        self._metadata = list(snap.metadata)
        self._next = n
        self._labels = {rid: label for label, rid in enumerate(self._ids) if rid is not None}
        self.tombstones = int(snap.extra.get("tombstones", 0))
        if snap.hnsw is not None and snap.hnsw_upto:
            fd, path = tempfile.mkstemp(prefix="hnsw-", suffix=".bin", dir=scratch_dir)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(snap.hnsw)
                index = hnswlib.Index(space=self._space, dim=dim)
                index.load_index(path, max_elements=self._capacity)
                index.set_ef(self.config.ef_search)
            finally:
                os.unlink(path)
            self._hnsw = index
            self._hnsw_upto = snap.hnsw_upto
            self._hnsw_live = int(self._live[: snap.hnsw_upto].sum())
        return self


def check_same_definition(existing: CollectionConfig, wanted: CollectionConfig) -> None:
    """Raise CollectionExists if ``wanted`` differs from ``existing``."""
    if existing != wanted:
        raise CollectionExists(f"collection {existing.name!r} exists with a different definition")
