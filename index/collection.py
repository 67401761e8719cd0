"""One collection: a recent tier (HNSW + exact buffer) and sealed historical segments
(IVF), searched together and merged by distance, each id living in exactly one tier.

Thread safety: mutations (``apply_*``, ``commit_migration``) take the write lock;
searches, ``get``, ``plan_migration`` and ``snapshot`` take the read lock, so searches run
in parallel threads. Segment training runs with no lock held, and so does graph
construction: ``drain`` takes the write lock only to plan a batch and to publish each
inserted chunk (see :mod:`s5vec.index.recent`), so acknowledgements, events and searches
do not wait for hnswlib's ``add_items``. Lock order: drain mutex, collection lock, graph lock.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, overload

import msgspec
import numpy as np

from .errors import RecordNotFound
from .filters import CHECK_EVERY, check_time, compile_filter, current_deadline, time_limit
from .ivf import TRAIN_POINTS_PER_LIST, Coarse, Codebook, IvfSegment, SharedLists, list_skew, shared_nlist, widen
from .metrics import distance_of, hit_values, raw_distances, score_of
from .payload import filter_intervals
from .recent import GRAPH_CHUNK, RecentTier, decode_many, min_chunk
from .records import Batch, CollectionConfig, Hit
from .rwlock import RWLock
from .scoring import merge as merge_hits
from .search import SearchResult, SearchSpec
from .segment import LazyIvf, SealedSegment, hash_ids, segment_file, train_codebook

EXACT_FILTER_LIMIT: Final = 20_000
_MASK_CACHE_SIZE: Final = 8
SEGMENT_FILTER_CACHE: Final = 8
_NO_POSITIONS: Final = np.zeros(0, np.int64)
_NONE_ALLOWED: Final = np.zeros(0, np.uint8)  # SharedLists.bitmap: no row of that segment
VIEW_BITMAPS: Final = 8
_SPEC_KEY: Final = msgspec.json.Encoder().encode
_VERSIONS: Final = itertools.count(time.time_ns())
Candidates = tuple[np.ndarray, np.ndarray]  # (positions or labels, raw distances)
FILTERED_PROBE_MAX: Final = 4
SHARED_FROM: Final = 10_000
"""Historical rows from which a collection trains one codebook for all its segments; a
smaller first migration seals segments that train their own (cheap at that size), and the
rebalance job rebuilds them on the shared codebook once it exists."""
CODEBOOK_GROWTH: Final = 8.0
"""The rebalance job retrains the shared codebook when the live historical rows exceed this
many times the rows its lists were sized for (each list then scans 8x the rows)."""
RECALIBRATE_GROWTH: Final = 1.25
"""A migration recalibrates nprobe / re-rank depth when the historical rows grew (or
shrank) by this factor since the last calibration, or the codebook changed."""
CALIBRATION_SAMPLE: Final = 200
OBSERVED_QUERIES: Final = 256
OBSERVE_EVERY: Final = 4
MIN_OBSERVED: Final = 50
"""Calibration measures recall on the collection's own search traffic when it has seen
MIN_OBSERVED queries (every OBSERVE_EVERY-th search's vector is kept in a ring of
OBSERVED_QUERIES): records make queries unlike real ones wherever the data has
near-duplicates. On 10M MiniLM-derived rows (~99 derived siblings per real row) records,
even moved off by noise, measured 0.97 at settings that gave 0.75 on the real queries."""
CALIBRATION_NOISE: Final = 1.0
"""Calibration queries are stored records moved off the data by random noise of this
norm relative to theirs (cosine ~0.7 to the record), the record left out of its own
answers. Records as they are make queries that are too easy wherever near-duplicates
exist: on 1M MiniLM-derived rows (each real row has ~9 derived siblings) they measured
0.97 at settings that gave 0.83 on the data set's real queries; with this noise, 300k
rows calibrated to 0.951 and the real queries measured 0.9515 (0.934 without)."""
UNCALIBRATED_SHARE: Final = 4
SHARED_DEPTH: Final = 480
"""Before its first calibration (which the engine runs right after the migration that
trained the codebook) a shared codebook probes 1/4 of its lists and re-ranks 480
candidates: slow at scale, but above 0.95 on every data set tried (MiniLM 40k, 256 lists:
0.966 needed 1/4)."""
_DEPTH_STEPS: Final = (100, 160, 240, 320, 480, 640, 960, 1280, 1920, 2560)


def filtered_nprobe(nprobe: int, selectivity: float) -> int:
    """Lists to probe in a segment for a filtered search where ``selectivity`` of its rows
    match: ``nprobe * ceil(1 / sqrt(selectivity))``, at most x4.  Fewer matching rows per
    list leave fewer good candidates for the re-rank: on a 900k-row segment (63 lists,
    nprobe 16) 10 % filters lost recall to 0.940-0.955 against 0.96 unfiltered."""
    if selectivity >= 1.0:
        return nprobe
    return nprobe * min(FILTERED_PROBE_MAX, math.ceil(1.0 / math.sqrt(max(selectivity, 1e-9))))


@dataclass(slots=True)
class CollectionSnapshot:
    """A collection's state at one instant, as plain data plus the (immutable) segments
    and the shared codebook with the rows it was sized for (None before one is trained)."""

    config: CollectionConfig
    recent: dict[str, Any]
    segments: list[tuple[SealedSegment, dict[str, Any], int]]  # segment, mutable parts, version
    codebook: tuple[Codebook, int] | None = None


@dataclass(slots=True)
class MigrationPlan:
    """Records of the recent tier that belong to the historical tier, grouped by window."""

    cutoff: float
    windows: dict[int, dict[str, Any]]

    @property
    def size(self) -> int:
        return sum(len(w["labels"]) for w in self.windows.values())


@dataclass(slots=True)
class RebuildSource:
    """One old segment of a rebuild: which of its rows were copied, and its overlay then."""

    segment: SealedSegment
    positions: np.ndarray          # live positions in the old segment, ascending
    overlay: dict[int, bytes]      # its metadata overlay when planned (edits after it are replayed)


@dataclass(slots=True)
class SegmentRebuild:
    """The live rows of one sealed segment, or of several consecutive ones being merged,
    copied for an off-lock rebuild (rows in source order)."""

    sources: list[RebuildSource]
    vectors: np.ndarray
    ids: list[str]
    timestamps: np.ndarray
    raw_metadata: list[bytes]

    @property
    def segment(self) -> SealedSegment:
        """The first (or only) old segment: the new one takes its window and place."""
        return self.sources[0].segment

    @property
    def rows(self) -> int:
        return sum(len(source.positions) for source in self.sources)


class Collection:
    """Records of one collection across both tiers (see module docstring)."""

    def __init__(self, config: CollectionConfig, scratch_dir: Path, capacity: int = 1024) -> None:
        config.validate()
        self.config = config
        self._scratch = Path(scratch_dir)
        self._lock = RWLock()
        self.recent = RecentTier(config, self._scratch, capacity)
        self.segments: list[SealedSegment] = []
        self._seq_lock = threading.Lock()
        self._next_seq = 0
        self.version = next(_VERSIONS)  # unique across collections: a dropped and recreated one never matches
        self.tuned: dict[str, Any] = {}  # calibrated ef / nprobe / rerank and what they measured
        self.coarse: Coarse | None = None  # the shared codebook's coarse quantizer (None: not trained yet)
        self._view: SharedLists | None = None  # the shared segments' lists merged (see _shared_lists)
        self._view_lock = threading.Lock()
        self._view_bitmaps: list[tuple[SharedLists, list[np.ndarray | None], np.ndarray]] = []
        self.codebook_rows = 0  # the historical rows its lists were sized for
        self._codebook_lock = threading.Lock()
        self._observed = np.zeros((OBSERVED_QUERIES, config.dimension), np.float32)
        self._observed_count = 0  # searches seen; the ring holds every OBSERVE_EVERY-th one's vector
        self._calibrating = False  # calibration's own searches are not traffic
        # (filter, version, graph size) -> recent-tier mask, count, labels when few, count in the graph
        self._masks: dict[tuple[bytes, int, int], tuple[np.ndarray, int, np.ndarray | None, int]] = {}
        self._masks_lock = threading.Lock()
        self._drain_mutex = threading.Lock()  # one drain at a time; a snapshot waits for it
        # A filtered search skips segments whose payload ranges the filter excludes (issue 19);
        # off only to measure or compare. The counters are for stats(): segments searched or
        # skipped by filtered searches (approximate under concurrent searches: plain ints).
        self.prune_segments = True
        self.segments_searched = 0
        self.segments_pruned = 0

    # ------------------------------------------------------------------ lookups
    def _segment_of(self, record_id: str) -> tuple[SealedSegment, int] | None:
        for segment in reversed(self.segments):
            pos = segment.find(record_id)
            if pos is not None:
                return segment, pos
        return None

    def __len__(self) -> int:
        return len(self.recent) + sum(s.live for s in self.segments)

    def contains(self, record_id: str) -> bool:
        return record_id in self.recent.labels or self._segment_of(record_id) is not None

    @property
    def pending(self) -> int:
        return self.recent.pending

    @property
    def tombstones(self) -> int:
        return self.recent.tombstones

    def stats(self) -> dict[str, Any]:
        historical = sum(s.live for s in self.segments)
        view = self._view
        merged = view.memory_bytes() if view is not None and self.coarse is not None \
            and view.members and view.members[0].codebook == self.coarse.id else 0
        return {
            "name": self.config.name, "dimension": self.config.dimension, "metric": self.config.metric,
            "schema": self.config.schema, "count": len(self.recent) + historical,
            **self.recent.stats(), "historical": historical, "segments": len(self.segments),
            "historical_memory_bytes": sum(s.memory_bytes() for s in self.segments) + merged,
            "segments_loaded": sum(1 for s in self.segments if getattr(s.ivf, "loaded", True)),
            "segments_searched": self.segments_searched, "segments_pruned": self.segments_pruned,
            "payload_indexes": self.config.payload_fields, "version": self.version, "tuned": self.tuned,
            "target_recall": self.config.target_recall, "calibrated": self.calibrated(),
            "codebook": None if self.coarse is None else {
                "id": self.coarse.id, "nlist": self.coarse.nlist, "sized_for": self.codebook_rows,
                "segments": sum(1 for s in self.segments if s.codebook == self.coarse.id),
                "memory_bytes": self.coarse.memory_bytes(), "merged_lists_bytes": merged},
            "embedding_model": self.config.embedding_model,
        }

    def calibrated(self) -> dict[str, Any]:
        """The search settings searches use when a request does not set them, with the recall
        they measured and where they came from ("defaults" before a calibration); keys
        without a value (recall before a calibration, rerank without a shared codebook)
        are left out."""
        t = self.tuned
        shared = self.coarse is not None
        out = {"ef": t.get("ef", self.config.ef_search),
                "nprobe": self._nprobe() if shared else int(t.get("own_nprobe") or self.config.ivf_nprobe),
                "rerank": self._depth(10) if shared else None, "recall": t.get("recall"),
                "ef_recall": t.get("ef_recall"), "target": t.get("target", self.config.target_recall),
                "rows": t.get("rows"), "source": "calibrated" if t else "defaults"}
        return {key: value for key, value in out.items() if value is not None}

    # ---------------------------------------------------------------- mutations
    def apply_upsert(self, batch: Batch) -> list[bool]:
        """Insert or replace every record of a validated batch (write lock); returns, per
        record, whether its id existed before (an update rather than an addition)."""
        if not len(batch):
            return []
        with self._lock.write():
            labels = self.recent.labels
            existed = [record_id in labels for record_id in batch.ids]
            if self.segments:
                hashes = hash_ids(batch.ids)
                for segment in reversed(self.segments):
                    found = segment.find_many(batch.ids, hashes)
                    for n in np.flatnonzero(found >= 0).tolist():
                        segment.delete(int(found[n]))
                        existed[n] = True
            if len(set(batch.ids)) < len(batch.ids):  # a repeated id updates its earlier copy
                seen: set[str] = set()
                for n, record_id in enumerate(batch.ids):
                    existed[n] = existed[n] or record_id in seen
                    seen.add(record_id)
            self.recent.append(batch)
            self.version = next(_VERSIONS)
        return existed

    def apply_delete(self, ids: Sequence[str]) -> int:
        """Delete records by id in whichever tier holds them; returns how many existed."""
        removed = 0
        with self._lock.write():
            for record_id in ids:
                label = self.recent.labels.get(record_id)
                if label is not None:
                    self.recent.retire(label)
                    removed += 1
                    continue
                found = self._segment_of(record_id)
                if found is not None:
                    found[0].delete(found[1])
                    removed += 1
            self.version = next(_VERSIONS)
        return removed

    def apply_metadata(self, record_id: str, metadata: dict[str, Any]) -> None:
        """Replace a record's metadata, keeping its vector and tier (write lock)."""
        with self._lock.write():
            label = self.recent.labels.get(record_id)
            if label is not None:
                self.recent.set_metadata(label, metadata)
            else:
                found = self._segment_of(record_id)
                if found is None:
                    raise RecordNotFound(f"no record {record_id!r} in collection {self.config.name!r}")
                found[0].set_metadata(found[1], metadata)
            self.version = next(_VERSIONS)

    def drain(self, max_items: int = 256, num_threads: int = 2, now: float | None = None,
              chunk: int = GRAPH_CHUNK) -> int:
        """Move up to ``max_items`` pending vectors into the graph (old ones are parked for
        migration); returns how many labels it went through. The write lock is held only to
        plan and to publish each ``chunk``: ``add_items`` runs without it. If compaction
        replaces the tier meanwhile, the rest is dropped (the new tier holds the records)."""
        cutoff = (now or time.time()) - self.config.recent_threshold_s
        with self._drain_mutex:
            with self._lock.write():
                tier = self.recent
                plan = tier.plan_drain(max_items, cutoff)
            if plan is None:
                return 0
            for part in plan.chunks(max(chunk, min_chunk(num_threads))):
                tier.insert(part, num_threads)
                with self._lock.write():
                    if self.recent is not tier:
                        break
                    tier.publish(part)
            return plan.end - plan.start

    # -------------------------------------------------------------------- reads
    def get(self, record_id: str, include_vector: bool = True) -> Hit:
        """Fetch one live record from either tier; raises RecordNotFound. Enters beside
        searches even while a writer waits for them (a read by id takes microseconds)."""
        with self._lock.read_now():
            return self._get(record_id, include_vector)

    def _get(self, record_id: str, include_vector: bool) -> Hit:
        label = self.recent.labels.get(record_id)
        if label is not None:
            r = self.recent
            vector = r.vectors[label].copy() if include_vector else None
            return Hit(record_id, 0.0, 1.0, r.metadata[label], vector, float(r.timestamps[label]))
        found = self._segment_of(record_id)
        if found is None:
            raise RecordNotFound(f"no record {record_id!r} in collection {self.config.name!r}")
        segment, pos = found
        vector = segment.ivf.vectors(np.array([pos]))[0] if include_vector else None
        return Hit(record_id, 0.0, 1.0, segment.meta(pos), vector, float(segment.timestamps[pos]))

    def ids_after(self, after: str | None = None) -> list[str]:
        """Ids of every live record sorting after ``after`` (all when None), in code-point
        order (read lock while collecting)."""
        with self._lock.read():
            ids = list(self.recent.labels)
            for segment in self.segments:
                ids.extend(segment.id_of(pos) for pos in np.flatnonzero(~segment.deleted).tolist())
        if after is not None:
            ids = [i for i in ids if i > after]
        ids.sort()
        return ids

    def get_many(self, ids: Iterable[str], include_vector: bool = True) -> list[Hit]:
        """The live records among ``ids``, in that order; absent ids are skipped (read lock)."""
        out: list[Hit] = []
        with self._lock.read_now():
            for record_id in ids:
                try:
                    out.append(self._get(record_id, include_vector))
                except RecordNotFound:
                    continue
        return out

    def ids_matching(self, spec: Mapping[str, Any]) -> list[str]:
        """Ids of every live record whose metadata matches ``spec`` (read lock)."""
        with self._lock.read():
            out: list[str] = []
            mask = self._recent_mask(spec)
            out.extend(self.recent.ids[i] for i in np.flatnonzero(mask).tolist())  # type: ignore[misc]
            for segment in self._segments_for(spec):
                out.extend(segment.id_of(i) for i in np.flatnonzero(self._segment_mask(segment, spec)).tolist())
            return out

    def _use_ef(self, ef: int | None, k: int) -> None:
        # hnswlib keeps ef per index, not per query: changing it must not overlap searches.
        want = max(ef or self.tuned.get("ef") or self.config.ef_search, k)
        if want != self.recent.ef:
            with self._lock.write(), self.recent.graph_lock.write():
                self.recent.hnsw.set_ef(want)
                self.recent.ef = want

    def _recent_mask(self, spec: Mapping[str, Any]) -> np.ndarray:
        r = self.recent
        mask = r.payload.mask(spec, r.next)
        if mask is None:  # a field without a usable payload index: evaluate per record
            predicate = compile_filter(spec, None)  # checked against the limits where it came in
            mask = np.zeros(r.next, bool)
            for n, label in enumerate(np.flatnonzero(r.live[: r.next]).tolist()):
                if not n % CHECK_EVERY:
                    check_time()
                mask[label] = predicate(r.metadata[label] or {})
        return mask & r.live[: r.next]

    def _segment_mask(self, segment: SealedSegment, spec: Mapping[str, Any]) -> np.ndarray:
        mask = segment.payload.mask(spec, segment.n)
        if mask is None:
            predicate = compile_filter(spec, None)
            mask = np.zeros(segment.n, bool)
            for n, pos in enumerate(np.flatnonzero(~segment.deleted).tolist()):
                if not n % CHECK_EVERY:
                    check_time()
                mask[pos] = predicate(segment.meta(pos))
        return mask & ~segment.deleted

    def _segment_match(self, segment: SealedSegment, spec: Mapping[str, Any]) -> tuple[int, np.ndarray, np.ndarray]:
        """How many live rows of ``segment`` match ``spec``, their positions and the faiss
        selector bitmap; kept per filter until the segment changes (SEGMENT_FILTER_CACHE
        filters each): on 900k rows a keyword ``$in`` over a list field costs milliseconds
        to evaluate, more than the filtered scan it plans."""
        try:
            key: bytes | None = _SPEC_KEY(spec)
        except (TypeError, ValueError, OverflowError):  # not JSON (an in-process caller's own types)
            key = None
        cache = segment.filter_cache
        if key is not None:
            hit = cache.get(key)
            if hit is not None and hit[0] == segment.version:
                return hit[1], hit[2], hit[3]
        version = segment.version
        mask = self._segment_mask(segment, spec)
        positions = np.flatnonzero(mask)
        # positions only when few enough for the exact path (50 % of 900k would be 3.6 MB)
        entry = (version, len(positions), positions if len(positions) <= EXACT_FILTER_LIMIT else _NO_POSITIONS,
                 np.packbits(mask, bitorder="little"))
        if key is not None:
            cache.pop(key, None)
            while len(cache) >= SEGMENT_FILTER_CACHE:
                cache.pop(next(iter(cache)), None)
            cache[key] = entry
        return entry[1], entry[2], entry[3]

    def _segments_for(self, spec: Mapping[str, Any] | None, count: bool = False) -> list[SealedSegment]:
        """The live segments a search with filter ``spec`` must look at: those whose payload
        ranges the filter's bounded number/datetime fields can meet (all of them without a
        filter or with pruning off). ``count``: add to the stats counters (filtered searches)."""
        live = [s for s in self.segments if s.live]
        if spec is None or not self.prune_segments:
            return live
        intervals = filter_intervals(spec, self.config.payload_fields)
        wanted = [s for s in live if s.payload.may_match(intervals)] if intervals else live
        if count:
            self.segments_searched += len(wanted)
            self.segments_pruned += len(live) - len(wanted)
        return wanted

    def _search_recent(self, queries: np.ndarray, k: int, spec: Mapping[str, Any] | None,
                       num_threads: int) -> list[Candidates]:
        r = self.recent
        pool = r.exact_pool()
        if spec is None:
            graph = r.graph(queries, k, num_threads)
            out = []
            for row, query in enumerate(queries):
                if graph is None:
                    g = r.exact(r.graph_live_labels(), query, k)
                else:
                    g = (graph[0][row], graph[1][row])
                out.append(_concat(g, r.exact(pool, query, k)) if len(pool) else g)
            return out
        mask, _, labels, allowed = self._planned_mask(spec)
        if labels is not None:
            return [r.exact(labels, query, k) for query in queries]
        pool = pool[mask[pool]] if len(pool) else pool
        return [_concat(self._graph_filtered(query, k, mask, allowed), r.exact(pool, query, k)) for query in queries]

    def _planned_mask(self, spec: Mapping[str, Any]) -> tuple[np.ndarray, int, np.ndarray | None, int]:
        """The recent tier's mask for ``spec`` (read-only), how many records match, their
        labels when few enough for an exact scan, and how many of them the graph holds.
        Cached per filter until the next write: building the mask costs ~0.3 ms at 400k
        records, more than the exact scan it plans at 0.1 % selectivity."""
        r = self.recent
        try:
            key = (_SPEC_KEY(spec), self.version, r.hnsw_upto)
        except (TypeError, ValueError, OverflowError):  # not JSON (an in-process caller's own types)
            key = None
        if key is not None:
            cached = self._masks.get(key)
            if cached is not None:
                return cached
        mask = self._recent_mask(spec)
        matching = int(np.count_nonzero(mask))
        planned: tuple[np.ndarray, int, np.ndarray | None, int]
        if matching <= EXACT_FILTER_LIMIT:
            planned = (mask, matching, np.flatnonzero(mask), 0)
        else:
            planned = (mask, matching, None, int(np.count_nonzero(mask[: r.hnsw_upto])))
        if key is not None:
            with self._masks_lock:  # masks of older versions go at once: each is a byte per record
                stale = [old for old in self._masks if old[1:] != key[1:]]
                if len(self._masks) - len(stale) >= _MASK_CACHE_SIZE:
                    stale.append(next(iter(self._masks)))
                for old in stale:
                    self._masks.pop(old, None)
                self._masks[key] = planned
        return planned

    def _graph_filtered(self, query: np.ndarray, k: int, mask: np.ndarray, allowed: int) -> Candidates:
        """Filtered ANN on the graph (:meth:`RecentTier.graph_filtered`), exact if it cannot answer."""
        r = self.recent
        found = r.graph_filtered(query, k, mask, allowed)
        if found is None:
            labels = r.graph_live_labels()
            return r.exact(labels[mask[labels]], query, k)
        return found

    def _search_segment(self, segment: SealedSegment, queries: np.ndarray, k: int,
                        spec: Mapping[str, Any] | None, nprobe: int | None) -> list[Candidates]:
        nprobe = nprobe or self._nprobe(segment)
        if spec is None:
            # No tombstones (the common case): no mask to count and pack per query.
            deleted = segment.deleted if segment.live < len(segment.deleted) else None
            pos, dist = segment.ivf.search(queries, k, nprobe, None, deleted)
        else:
            mask = self._segment_mask(segment, spec)
            matching = int(mask.sum())
            if matching <= EXACT_FILTER_LIMIT:
                pos, dist = segment.ivf.exact(queries, k, np.flatnonzero(mask))
            else:
                pos, dist = segment.ivf.search(queries, k, filtered_nprobe(nprobe, matching / segment.n), mask, None)
        out = []
        for row in range(len(queries)):
            keep = pos[row] >= 0
            out.append((pos[row][keep], dist[row][keep]))
        return out

    def _observe(self, query: np.ndarray) -> None:
        """Keep every OBSERVE_EVERY-th search vector for calibration (a ring; races between
        searches only drop or overwrite a sample)."""
        if self._calibrating:
            return
        seen = self._observed_count
        self._observed_count = seen + 1
        if seen % OBSERVE_EVERY == 0:
            self._observed[(seen // OBSERVE_EVERY) % OBSERVED_QUERIES] = query

    def observed_queries(self) -> np.ndarray:
        """The search vectors kept for calibration (a copy, in ring order)."""
        kept = min(OBSERVED_QUERIES, (self._observed_count + OBSERVE_EVERY - 1) // OBSERVE_EVERY)
        return self._observed[:kept].copy()

    def _nprobe(self, segment: SealedSegment | None = None) -> int:
        """Lists probed when the request does not say: for the shared codebook's segments
        (``segment`` None) the calibrated value, or before a calibration of this codebook
        1/UNCALIBRATED_SHARE of its lists; the collection's setting for segments with a
        codebook of their own (older releases, small first migrations)."""
        coarse = self.coarse
        if segment is not None and (coarse is None or segment.codebook != coarse.id):
            return int(self.tuned.get("own_nprobe") or self.config.ivf_nprobe)
        if coarse is not None and self.tuned.get("codebook") == coarse.id and self.tuned.get("nprobe"):
            return int(self.tuned["nprobe"])
        return max(self.config.ivf_nprobe, (coarse.nlist if coarse else 0) // UNCALIBRATED_SHARE)

    def _depth(self, k: int) -> int:
        """Candidates re-ranked exactly over the shared codebook's segments when the request
        does not say: the calibrated value, or SHARED_DEPTH before a calibration."""
        coarse = self.coarse
        if coarse is not None and self.tuned.get("codebook") == coarse.id and self.tuned.get("rerank"):
            return max(k, int(self.tuned["rerank"]))
        return max(k * self.config.ivf_rerank, SHARED_DEPTH)

    def _search_shared(self, coarse: Coarse, segments: list[tuple[int, SealedSegment]], queries: np.ndarray,
                       k: int, nprobe: int | None, rerank: int | None,
                       spec: Mapping[str, Any] | None) -> list[tuple[int, list[Candidates]]]:
        """Segments filled from the shared codebook, searched together: one coarse search
        picks the lists, each segment scans them by code (approximate scores compare across
        segments: same centroids, same code tables), the best ``rerank`` candidates over
        all of them are scored exactly from the full-precision rows, and each segment's
        exact top ``k`` goes to the merge. Tombstones and filters are applied inside faiss;
        a filter matching few rows (EXACT_FILTER_LIMIT over these segments) is answered
        exactly, a selective one probes more lists (:func:`filtered_nprobe`), and a query
        still short of ``k`` candidates probes x4 per round up to every list."""
        probe = nprobe or self._nprobe()
        depth = max(k, rerank or self._depth(k))
        rows = sum(s.n for _, s in segments)
        if spec is None:
            bitmaps = [s.live_bitmap() for _, s in segments]
            matching = sum(s.live for _, s in segments)
        else:
            matches = [self._segment_match(s, spec) for _, s in segments]
            matching = sum(count for count, _, _ in matches)
            if matching <= EXACT_FILTER_LIMIT:
                return [(index, _rows_of(*s.ivf.exact(queries, k, positions)))
                        for (index, s), (count, positions, _) in zip(segments, matches) if count]
            bitmaps = [bitmap for _, _, bitmap in matches]
            probe = filtered_nprobe(probe, matching / max(1, rows))
        if not matching:
            return []
        nlist = coarse.nlist
        probe = min(probe, nlist)
        label, slots = self._shared_candidates(coarse, segments, bitmaps, queries, probe, depth)

        def again(rows: np.ndarray, wider: int) -> np.ndarray:
            found, slots[rows] = self._shared_candidates(coarse, segments, bitmaps, queries[rows], wider, depth)
            return found

        widen(label, min(k, matching), probe, nlist, again)
        return self._rerank_shared(segments, queries, label, slots, k)

    def _rerank_shared(self, segments: list[tuple[int, SealedSegment]], queries: np.ndarray, label: np.ndarray,
                       slots: np.ndarray, k: int) -> list[tuple[int, list[Candidates]]]:
        """Each query's exact top ``k`` of its candidates (``label`` positions, -1 padded, in
        the segments ``slots`` names), scored in one product from the full-precision rows
        gathered out of each segment's memory map: one call per segment cost ~50 us each,
        more than the scoring. Returns the candidates of each segment holding a winner."""
        nq = len(queries)
        metric = self.config.metric
        found: dict[int, list[Candidates]] = {}
        for row in range(nq):
            ok = label[row] >= 0
            pos, slot = label[row][ok], slots[row][ok]
            if not len(pos):
                continue
            order = np.argsort(slot, kind="stable")
            pos, slot = pos[order], slot[order]
            starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
            bounds = [*starts.tolist(), len(slot)]
            rows = np.concatenate([_ivf_of(segments[int(slot[a])][1]).vectors(pos[a:b])
                                   for a, b in zip(bounds, bounds[1:])])
            dist = raw_distances(metric, rows, queries[row])
            take = min(k, len(dist))
            best = np.argpartition(dist, take - 1)[:take] if len(dist) > take else np.arange(len(dist))
            for at in best.tolist():
                entry = found.setdefault(int(slot[at]), [([], []) for _ in range(nq)])  # type: ignore[misc]
                entry[row][0].append(int(pos[at]))  # type: ignore[attr-defined]
                entry[row][1].append(float(dist[at]))  # type: ignore[attr-defined]
        return [(segments[slot][0], [(np.asarray(p, np.int64), np.asarray(d, np.float32)) for p, d in rows_])
                for slot, rows_ in sorted(found.items())]

    def _shared_lists(self, coarse: Coarse, group: list[tuple[int, SealedSegment]]) -> SharedLists | None:
        """The merged lists of every segment filled from ``coarse``'s codebook, made anew
        when they changed; None when
        ``group`` (the segments a search may meet after time pruning) holds less than half
        of their rows, where scanning those segments one by one costs less."""
        members = [s for s in self.segments if s.codebook == coarse.id]
        if 2 * sum(s.n for _, s in group) < sum(s.n for s in members):
            return None
        ivfs = tuple(_ivf_of(s) for s in members)
        view = self._view
        if view is None or view.members != ivfs:
            with self._view_lock:
                view = self._view
                if view is None or view.members != ivfs:
                    view = self._view = SharedLists(coarse, ivfs)
        return view

    def _view_bitmap(self, view: SharedLists, parts: list[np.ndarray | None]) -> np.ndarray | None:
        """:meth:`SharedLists.bitmap` of ``parts``, kept while the same per-segment bitmaps
        (cached per tombstone version and per filter) come back: joining 10M rows' bits
        costs ~1 ms, more than the scan it selects for."""
        if all(part is None for part in parts):
            return None
        kept = self._view_bitmaps
        for known, known_parts, bitmap in kept:
            if known is view and all(a is b for a, b in zip(known_parts, parts)):
                return bitmap
        bitmap = view.bitmap(parts)
        self._view_bitmaps = [(view, parts, bitmap), *kept[:VIEW_BITMAPS - 1]]
        return bitmap

    def _shared_candidates(self, coarse: Coarse, segments: list[tuple[int, SealedSegment]],
                           bitmaps: list[np.ndarray | None], queries: np.ndarray, probe: int,
                           depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``depth`` candidates by code over ``segments`` for each query: their
        positions (-1 padded) and the slot of the segment each is in, (nq, depth) each."""
        list_dist, lists = coarse.assign(queries, probe)
        view = self._shared_lists(coarse, segments)
        if view is not None:
            where = {id(ivf): slot for slot, ivf in enumerate(view.members)}
            parts: list[np.ndarray | None] = [_NONE_ALLOWED] * len(view.members)
            for (_, segment), bitmap in zip(segments, bitmaps):
                parts[where[id(_ivf_of(segment))]] = bitmap
            slot_of = np.zeros(len(view.members), np.int32)  # a member left out has no allowed row
            for slot, (_, segment) in enumerate(segments):
                slot_of[where[id(_ivf_of(segment))]] = slot
            _, merged = view.scan(queries, depth, lists, list_dist, self._view_bitmap(view, parts))
            member, position = view.locate(merged)
            return position, slot_of[member]
        scores, labels, owner = [], [], []
        for slot, ((_, segment), bitmap) in enumerate(zip(segments, bitmaps)):
            d, lab = segment.ivf.scan(queries, depth, lists, list_dist, bitmap)
            scores.append(d)
            labels.append(lab)
            owner.append(np.full(lab.shape, slot, np.int32))
        score = np.concatenate(scores, axis=1)
        label = np.concatenate(labels, axis=1)
        slots = np.concatenate(owner, axis=1)
        key = score if self.config.metric == "l2" else -score
        key[label < 0] = np.inf
        width = min(depth, key.shape[1])
        top = np.argpartition(key, width - 1, axis=1)[:, :width] if key.shape[1] > width else \
            np.broadcast_to(np.arange(width), key.shape)
        out_label = np.full((len(queries), depth), -1, np.int64)
        out_slots = np.zeros((len(queries), depth), np.int32)
        out_label[:, :width] = np.take_along_axis(label, top, axis=1)
        out_slots[:, :width] = np.take_along_axis(slots, top, axis=1)
        return out_label, out_slots

    # ------------------------------------------------------------------- search
    @overload
    def search(self, query: np.ndarray, k: SearchSpec, *, executor: Executor | None = None,
               ) -> SearchResult[list[Hit]]: ...

    @overload
    def search(self, query: np.ndarray, k: int = 10, ef: int | None = None,
               filter: Mapping[str, Any] | None = None, score_threshold: float | None = None,
               include_metadata: bool = True, include_vector: bool = False, **options: Any) -> list[Hit]: ...

    def search(self, query: np.ndarray, k: int | SearchSpec = 10, ef: int | None = None,
               filter: Mapping[str, Any] | None = None, score_threshold: float | None = None,
               include_metadata: bool = True, include_vector: bool = False,
               **options: Any) -> SearchResult[list[Hit]] | list[Hit]:
        """``search(query, spec, executor=None)``: the top ``spec.k`` live records nearest to
        one query (validated, normalised), best first, as a :class:`SearchResult`. Segments
        are searched on ``executor`` in parallel with the recent tier when one is given.
        Thread safe (read lock).

        The older form ``search(query, k, ef, filter, score_threshold, include_metadata,
        include_vector, **options)`` returns the hits alone and takes the other
        :class:`SearchSpec` fields, ``executor`` and a ``report`` dict (filled with
        "partial" and "seconds") as options: the benchmarks and older tests call it (the
        engine uses the spec form)."""
        self._observe(query)
        if isinstance(k, SearchSpec):  # also an engine Query, which extends it
            return self._query(query, k, options.get("executor"))
        if filter is None and not options:  # the plain query: no spec to build
            if ef is None or ef < k or ef != self.recent.ef:
                self._use_ef(ef, k)
            found = self._search_graph(query, k, score_threshold, include_metadata, include_vector, True, 1, None)
            if found is not None:
                return found[0]
        report = options.pop("report", None)
        executor = options.pop("executor", None)
        result = self._query(query, SearchSpec(k=k, ef=ef, filter=filter, score_threshold=score_threshold,
                                               include_metadata=include_metadata, include_vector=include_vector,
                                               **options), executor)
        if report is not None:
            report["partial"] = result.partial
            report["seconds"] = result.seconds
        return result.hits

    @overload
    def search_batch(self, queries: np.ndarray, k: SearchSpec, *, executor: Executor | None = None,
                     ) -> SearchResult[list[list[Hit]]]: ...

    @overload
    def search_batch(self, queries: np.ndarray, k: int = 10, ef: int | None = None,
                     filter: Mapping[str, Any] | None = None, score_threshold: float | None = None,
                     include_metadata: bool = True, include_vector: bool = False, *,
                     executor: Executor | None = None, report: dict[str, Any] | None = None,
                     **options: Any) -> list[list[Hit]]: ...

    def search_batch(self, queries: np.ndarray, k: int | SearchSpec = 10, ef: int | None = None,
                     filter: Mapping[str, Any] | None = None, score_threshold: float | None = None,
                     include_metadata: bool = True, include_vector: bool = False, *,
                     executor: Executor | None = None, report: dict[str, Any] | None = None,
                     **options: Any) -> SearchResult[list[list[Hit]]] | list[list[Hit]]:
        """``search_batch(queries, spec, executor=None)``: the top ``spec.k`` for each query
        row over both tiers, merged without duplicates (by distance, or by ``spec.merge``),
        as one :class:`SearchResult` whose ``hits`` hold a list per row.

        Filters are applied inside each tier (payload-index masks; exact search over the
        matching records when few match, filtered ANN otherwise). Segments are searched on
        ``executor`` in parallel with the recent tier when one is given. A ``spec.deadline``
        (time.monotonic) skips segments not started in time; the result is then ``partial``.

        The older form takes the :class:`SearchSpec` fields as arguments and returns the
        hit lists alone, with ``report["partial"]`` / ``report["seconds"]``: the benchmarks
        and older tests call it (the engine uses the spec form)."""
        if len(queries):
            self._observe(queries[0])
        if isinstance(k, SearchSpec):  # also an engine Query, which extends it
            return self._query_batch(queries, k, executor)
        result = self._query_batch(queries, SearchSpec(k=k, ef=ef, filter=filter, score_threshold=score_threshold,
                                                       include_metadata=include_metadata,
                                                       include_vector=include_vector, **options), executor)
        if report is not None:
            report["partial"] = result.partial
            report["seconds"] = result.seconds
        return result.hits

    def _query(self, query: np.ndarray, spec: SearchSpec, executor: Executor | None) -> SearchResult[list[Hit]]:
        k, ef = spec.k, spec.ef
        if ef is None or ef < k or ef != self.recent.ef:
            self._use_ef(ef, k)
        if spec.filter is None and spec.recent and spec.merge == "take_best":
            seconds: dict[str, float] = {}
            found = self._search_graph(query, k, spec.score_threshold, spec.include_metadata, spec.include_vector,
                                       spec.historical, spec.num_threads, seconds)
            if found is not None:
                return SearchResult(found[0], False, seconds)
        hits, partial, seconds = self._search_tiers(query[None, :], spec, executor)
        return SearchResult(hits[0], partial, seconds)

    def _query_batch(self, queries: np.ndarray, spec: SearchSpec,
                     executor: Executor | None) -> SearchResult[list[list[Hit]]]:
        k, ef = spec.k, spec.ef
        if ef is None or ef < k or ef != self.recent.ef:
            self._use_ef(ef, k)
        if spec.filter is None and spec.recent and spec.merge == "take_best" and len(queries):
            seconds: dict[str, float] = {}
            found = self._search_graph(queries, k, spec.score_threshold, spec.include_metadata, spec.include_vector,
                                       spec.historical, spec.num_threads, seconds)
            if found is not None:
                return SearchResult(found, False, seconds)
        return SearchResult(*self._search_tiers(queries, spec, executor))

    def _search_graph(self, queries: np.ndarray, k: int, threshold: float | None, include_metadata: bool,
                      include_vector: bool, historical: bool, num_threads: int,
                      seconds: dict[str, float] | None) -> list[list[Hit]] | None:
        """The common query on a short path: unfiltered, and every live record searched is in
        the graph (nothing pending or parked, no live segment), for one query (1-d) or a
        batch. With 50-d vectors a graph search takes ~0.1 ms, and the general path's fixed
        cost (per-tier candidate lists, merge arrays, a dedupe set) doubled the latency; for
        a coalesced batch of 4 MiniLM queries it added 71 us per query. None when the case
        does not apply. The graph's wall time goes to ``seconds["recent"]`` when given."""
        if k <= 0:
            return None
        with self._lock.read():
            r = self.recent
            if (r.next != r.hnsw_upto or r.parked or r.hnsw_live <= 0
                    or (historical and self.segments and any(s.live for s in self.segments))):
                return None
            started = time.perf_counter() if seconds is not None else 0.0
            try:
                # positional: pybind11 matches keyword arguments by name (~0.45 us a call)
                labels, dists = r.hnsw.knn_query(queries, min(k, r.hnsw_live), num_threads)
            except RuntimeError:  # too many deletions for k live results: the general path falls back to exact
                return None
            if seconds is not None:
                seconds["recent"] = time.perf_counter() - started
            # Whole batch to lists at once (no per-row views); take, not fancy indexing:
            # ~0.5 us less for ten uint64 labels.
            stamps = r.timestamps.take(labels).tolist()
            return [self._recent_hits(row_labels, row_dists, row_stamps, threshold, include_metadata, include_vector)
                    for row_labels, row_dists, row_stamps in zip(labels.tolist(), dists.tolist(), stamps)]

    def _recent_hits(self, labels: list[int], dists: list[float], stamps: list[float], threshold: float | None,
                     include_metadata: bool, include_vector: bool) -> list[Hit]:
        """Hits for distinct recent-tier labels already sorted by distance (as :meth:`_hit`),
        with their distances and timestamps."""
        r = self.recent
        ids = r.ids
        metadata = r.metadata if include_metadata else None
        distances, scores = hit_values(self.config.metric, dists)  # lists: this loop is a visible part of a 0.1 ms search
        out: list[Hit] = []
        append = out.append
        for label, distance, score, stamp in zip(labels, distances, scores, stamps):
            record_id = ids[label]
            if record_id is None:
                continue
            if threshold is not None and score < threshold:
                continue
            append(Hit(record_id, distance, score, metadata[label] if metadata is not None else None,
                       r.vectors[label].copy() if include_vector else None, stamp))
        return out

    def _search_tiers(self, queries: np.ndarray, spec: SearchSpec,
                      executor: Executor | None) -> tuple[list[list[Hit]], bool, dict[str, float]]:
        """The general path of :meth:`search_batch`: each tier searched, then merged; returns
        the hit lists, whether a deadline skipped segments, and the seconds per tier."""
        k, filter, nprobe, deadline = spec.k, spec.filter, spec.nprobe, spec.deadline
        threshold, include_metadata, include_vector = spec.score_threshold, spec.include_metadata, spec.include_vector
        with self._lock.read():
            parts: list[tuple[int, list[Candidates]]] = []
            # a job returns one Candidates list per query, wrapped in a list, or (shared
            # segments) the (segment index, Candidates list) pairs of several segments
            jobs: list[tuple[int, Callable[[], list[Any]]]] = []
            if spec.historical:
                wanted = {id(s) for s in self._segments_for(filter, count=True)}
                coarse = self.coarse
                shared: list[tuple[int, SealedSegment]] = []
                for index, segment in enumerate(self.segments):
                    if id(segment) not in wanted:
                        continue
                    if coarse is not None and segment.codebook == coarse.id:
                        shared.append((index, segment))
                    else:
                        jobs.append((index, lambda s=segment: [self._search_segment(s, queries, k, filter, nprobe)]))
                if shared:
                    jobs.append((-2, lambda c=coarse, group=shared: self._search_shared(  # type: ignore[misc]
                        c, group, queries, k, nprobe, spec.rerank, filter)))
            partial = False
            futures = []
            seconds: dict[str, float] = {}
            started = time.perf_counter()
            finished: list[float] = []  # segment searches run beside the recent tier: time to the last one
            if executor is not None and len(jobs) > 1:
                limit = current_deadline()  # the search's time limit holds on the tier threads too
                futures = [(index, executor.submit(_timed, fn, deadline, finished, limit)) for index, fn in jobs]
            elif jobs:
                for index, fn in jobs:
                    result = _timed(fn, deadline)
                    if result is None:
                        partial = True
                    else:
                        parts.extend(_parts(index, result))
                seconds["historical"] = time.perf_counter() - started
            if spec.recent:
                recent_started = time.perf_counter()
                parts.append((-1, self._search_recent(queries, k, filter, spec.num_threads)))
                seconds["recent"] = time.perf_counter() - recent_started
            for index, future in futures:
                result = future.result()
                if result is None:
                    partial = True
                else:
                    parts.extend(_parts(index, result))
            if futures:
                seconds["historical"] = max(finished, default=started) - started
            if spec.merge != "take_best":
                return [self._merge_by(row, parts, k, threshold, include_metadata, include_vector, spec.merge,
                                       spec.weights) for row in range(len(queries))], partial, seconds
            return [self._merge(row, parts, k, threshold, include_metadata, include_vector)
                    for row in range(len(queries))], partial, seconds

    def _merge_by(self, row: int, parts: list[tuple[int, list[Candidates]]], k: int, threshold: float | None,
                  include_metadata: bool, include_vector: bool, strategy: str,
                  weights: Sequence[float] | None) -> list[Hit]:
        """Seed-style merge: one hit list per tier (recent, historical), combined by
        ``strategy`` with per-tier ``weights`` (see :func:`scoring.merge`)."""
        tiers: list[list[Hit]] = [[], []]
        metric = self.config.metric
        for tier, cands in parts:
            bucket = tiers[0] if tier < 0 else tiers[1]
            positions, raw = cands[row]
            for pos, distance, score in zip(positions.tolist(), distance_of(metric, raw).tolist(),
                                            score_of(metric, raw).tolist()):
                hit = self._hit(tier, pos, distance, score, include_metadata, include_vector)
                if hit is not None:
                    bucket.append(hit)
        merged = merge_hits(tiers, k, strategy, weights)
        return [h for h in merged if threshold is None or h.score >= threshold]

    def _merge(self, row: int, parts: list[tuple[int, list[Candidates]]], k: int, threshold: float | None,
               include_metadata: bool, include_vector: bool) -> list[Hit]:
        if not parts:
            return []
        tiers = np.concatenate([np.full(len(cands[row][0]), tier, np.int64) for tier, cands in parts])
        positions = np.concatenate([cands[row][0] for _, cands in parts]).astype(np.int64)
        dists = np.concatenate([cands[row][1] for _, cands in parts]).astype(np.float64)
        order = np.argsort(dists, kind="stable")
        ranked = dists[order]
        metric = self.config.metric
        hits: list[Hit] = []
        seen: set[str] = set()
        for i, distance, score in zip(order.tolist(), distance_of(metric, ranked).tolist(),
                                      score_of(metric, ranked).tolist()):
            if threshold is not None and score < threshold:
                continue
            hit = self._hit(int(tiers[i]), int(positions[i]), distance, score, include_metadata, include_vector)
            if hit is None or hit.id in seen:
                continue
            seen.add(hit.id)
            hits.append(hit)
            if len(hits) == k:
                break
        return hits

    def _hit(self, tier: int, pos: int, distance: float, score: float, include_metadata: bool,
             include_vector: bool) -> Hit | None:
        """The hit for position ``pos`` of ``tier`` (-1: recent), None if it was deleted;
        ``distance`` and ``score`` as :mod:`s5vec.index.metrics` reports them."""
        if tier < 0:
            r = self.recent
            record_id = r.ids[pos]
            if record_id is None:
                return None
            return Hit(record_id, distance, score, r.metadata[pos] if include_metadata else None,
                       r.vectors[pos].copy() if include_vector else None, float(r.timestamps[pos]))
        segment = self.segments[tier]
        if segment.deleted[pos]:
            return None
        return Hit(segment.id_of(pos), distance, score, segment.meta(pos) if include_metadata else None,
                   segment.ivf.vectors(np.array([pos]))[0] if include_vector else None,
                   float(segment.timestamps[pos]))

    # ------------------------------------------------------------------- tuning
    def tune(self, target: float | None = None, sample: int = CALIBRATION_SAMPLE, k: int = 10,
             seed: int = 0) -> dict[str, Any]:
        """:meth:`calibrate` now (``POST .../tune``)."""
        return self.calibrate(target, sample, k, seed)

    @property
    def calibration_due(self) -> bool:
        """The calibrated settings no longer describe the collection: the shared codebook
        changed, the historical rows changed by RECALIBRATE_GROWTH since, or the graph
        doubled (or halved) since ``ef`` was chosen."""
        t = self.tuned
        coarse = self.coarse
        historical = sum(s.live for s in self.segments if coarse is not None and s.codebook == coarse.id)
        if coarse is not None and historical > 0:
            if t.get("codebook") != coarse.id:
                return True
            rows = max(1, int(t.get("rows") or 1))
            if not 1 / RECALIBRATE_GROWTH <= historical / rows <= RECALIBRATE_GROWTH:
                return True
        graph = self.recent.hnsw_live
        if graph >= _EF_CALIBRATE_FROM:
            rows = int(t.get("ef_rows") or 0)
            return not rows or not 0.5 <= graph / rows <= 2.0
        return False

    def calibrate(self, target: float | None = None, sample: int = CALIBRATION_SAMPLE, k: int = 10,
                  seed: int = 0) -> dict[str, Any]:
        """Measure recall@k against exact search and keep the cheapest settings that meet
        ``target``. The queries are the collection's own search traffic once it has seen
        MIN_OBSERVED of them (up to ``sample``, see :meth:`observed_queries`), else
        ``sample`` of its records moved off the data by CALIBRATION_NOISE (each left out
        of its own answers). It keeps the cheapest
        settings that meet ``target`` (default: the collection's ``target_recall``): the
        graph's ``ef``, and for the segments of the shared codebook the ``nprobe`` and
        re-rank depth (candidates scored exactly), walked along the frontier where recall
        meets the target. Searches that do not set them use them from then on. CPU heavy
        (the exact answers scan every historical row once); call with no lock held.

        When nothing meets the target the most accurate setting tried is kept and ``met``
        is False; with too few records to measure, ``met`` is None and ``note`` says why.
        Returns what was measured, including the recall of every setting tried."""
        target = self.config.target_recall if target is None else float(target)
        rng = np.random.default_rng(seed)
        observed = self.observed_queries()
        traffic = observed[:sample] if len(observed) >= MIN_OBSERVED else None
        result: dict[str, Any] = {"target": target, "k": k, "met": True,
                                  "queries": "searches" if traffic is not None else "records",
                                  "sample": len(traffic) if traffic is not None else sample}
        self._calibrating = True
        try:
            return self._calibrate(target, rng, sample, k, traffic, result)
        finally:
            self._calibrating = False

    def _calibrate(self, target: float, rng: np.random.Generator, sample: int, k: int, traffic: np.ndarray | None,
                   result: dict[str, Any]) -> dict[str, Any]:
        tuned: dict[str, Any] = {key: v for key, v in self.tuned.items()}
        with self._lock.read():
            r = self.recent
            recent_labels = np.flatnonzero(r.live[: r.next])
            recent_rows = r.vectors[recent_labels] if len(recent_labels) else None
            recent_ids = [r.ids[i] for i in recent_labels.tolist()] if len(recent_labels) else []
            graph = r.hnsw_live
            segments = [s for s in self.segments if s.live]
            coarse = self.coarse
        if recent_rows is not None and len(recent_labels) > k + 1:
            if traffic is not None:
                queries, own = traffic, [""] * len(traffic)
            else:
                picks = rng.choice(len(recent_labels), min(sample, len(recent_labels)), replace=False)
                queries = self._calibration_queries(recent_rows[picks], rng)
                own = [recent_ids[i] for i in picks.tolist()]
            truth = _without(_exact_ids(queries, [(recent_rows, recent_ids)], k + 1, r.space), own, k)
            best: tuple[float, int] = (-1.0, 0)
            for ef in _EF_STEPS:
                got = _without([[h.id for h in hits] for hits in self.search_batch(
                    queries, SearchSpec(k=k + 1, ef=max(ef, k + 1), include_metadata=False, historical=False)).hits],
                    own, k)
                result.setdefault("ef_recall", {})[ef] = recall = _recall(got, truth)
                best = max(best, (recall, -ef))
                if recall >= target:
                    break
            tuned.update(ef=-best[1], ef_recall=best[0], ef_rows=graph)
            result["ef"] = -best[1]
            result["graph_recall"] = best[0]  # at that ef: the most accurate tried when the target is missed
            result["met"] = best[0] >= target
        shared = [s for s in segments if coarse is not None and s.codebook == coarse.id]
        rows = sum(s.live for s in shared)
        if coarse is not None and rows > k + 1:
            found = self._calibrate_shared(coarse, shared, rng, sample, k, target, result, traffic)
            tuned.update(found, codebook=coarse.id, rows=rows)
        elif segments and sum(s.live for s in segments) > k + 1:  # segments of older releases only
            found = self._calibrate_shared(None, segments, rng, sample, k, target, result, traffic)
            tuned.update(own_nprobe=found["nprobe"], recall=found["recall"], target=target)
        if "ef" not in result and "nprobe" not in result:  # nothing to measure: say so, claim nothing
            result["met"] = None
            result["note"] = f"too few records to measure recall@{k} (a tier needs more than {k + 1}); settings unchanged"
        self.tuned = tuned
        self.version = next(_VERSIONS)  # cached answers came from the old settings
        return result

    def _calibrate_shared(self, coarse: Coarse | None, segments: list[SealedSegment], rng: np.random.Generator,
                          sample: int, k: int, target: float, result: dict[str, Any],
                          traffic: np.ndarray | None = None) -> dict[str, Any]:
        """The frontier walk of :meth:`calibrate` over ``segments``: for each re-rank depth
        (ascending) the fewest lists that meet ``target``, never more than the previous
        depth needed; then the cheapest of those by a cost model measured on 10M MiniLM rows
        (3.6 ns per code scanned, 0.75 us per row re-ranked at 384 dimensions). Without a
        shared codebook (segments of older releases) only nprobe is walked."""
        live = [np.flatnonzero(~s.deleted) for s in segments]
        sizes = np.array([len(x) for x in live], np.int64)
        total = int(sizes.sum())
        if traffic is not None:
            queries, own = traffic, [""] * len(traffic)
        else:
            picks = np.sort(rng.choice(total, min(sample, total), replace=False))
            owner = np.searchsorted(np.cumsum(sizes), picks, side="right")
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            rows = np.concatenate([segments[o].ivf.vectors(live[o][[p - starts[o]]]) for o, p in
                                   zip(owner.tolist(), picks.tolist())])
            queries = self._calibration_queries(rows, rng)
            own = [segments[o].id_of(int(live[o][p - starts[o]])) for o, p in zip(owner.tolist(), picks.tolist())]
        truth = _without(self._exact_historical(queries, segments, k + 1), own, k)
        nlist = coarse.nlist if coarse is not None else max(s.ivf.nlist for s in segments)
        probes = sorted({p for p in (*_NPROBE_STEPS, nlist) if p <= nlist})
        depths = _DEPTH_STEPS if coarse is not None else (None,)
        measured: dict[tuple[int, int | None], float] = {}

        def recall(nprobe: int, depth: int | None) -> float:
            if (nprobe, depth) not in measured:
                hits = self.search_batch(queries, SearchSpec(k=k + 1, include_metadata=False, recent=False,
                                                             nprobe=nprobe, rerank=depth)).hits
                measured[(nprobe, depth)] = _recall(_without([[h.id for h in row] for row in hits], own, k), truth)
            return measured[(nprobe, depth)]

        frontier: list[tuple[int, int | None, float]] = []
        j = len(probes) - 1
        for depth in depths:
            if recall(probes[j], depth) < target:
                continue
            while j > 0 and recall(probes[j - 1], depth) >= target:
                j -= 1
            got = recall(probes[j], depth)
            if frontier and frontier[-1][0] == probes[j] and got - frontier[-1][2] < 0.002:
                break  # a deeper re-rank no longer buys recall (nor saves lists)
            frontier.append((probes[j], depth, got))
            if j == 0:
                break
        rows = sum(s.live for s in segments)
        dim = self.config.dimension

        def cost(nprobe: int, depth: int | None) -> float:
            return 3.6 * rows * nprobe / nlist + 750.0 * (depth or 0) * dim / 384

        if frontier:
            nprobe, depth, got = min(frontier, key=lambda f: cost(f[0], f[1]))
        else:  # the target is out of reach: the most accurate setting tried
            (nprobe, depth), got = max(measured.items(), key=lambda item: (item[1], -cost(*item[0])))
            result["met"] = False
        result.update(nprobe=nprobe, recall=got, nprobe_recall={
            (str(p) if d is None else f"{p}x{d}"): v for (p, d), v in sorted(measured.items(), key=lambda i: (i[0][1] or 0, i[0][0]))})
        if depth is not None:
            result["rerank"] = depth
        found: dict[str, Any] = {"nprobe": nprobe, "recall": got, "target": target}
        if depth is not None:
            found["rerank"] = depth
        return found

    def _calibration_queries(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``rows`` moved off the data by CALIBRATION_NOISE (see there), normalised again
        unless the metric is l2."""
        noise = rng.standard_normal(rows.shape).astype(np.float32)
        noise *= np.float32(CALIBRATION_NOISE) / np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
        queries = rows + noise * np.linalg.norm(rows, axis=1, keepdims=True)
        if self.config.metric != "l2":
            queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), np.float32(1e-12))
        return np.ascontiguousarray(queries, np.float32)

    def _exact_historical(self, queries: np.ndarray, segments: list[SealedSegment], k: int) -> list[list[str]]:
        """Exact top-``k`` ids over the live rows of ``segments`` (BLAS over each memory map)."""
        nq = len(queries)
        dists = np.full((nq, 0), np.inf, np.float32)
        names: list[list[str]] = [[] for _ in range(nq)]
        for segment in segments:
            dead = int(segment.n - segment.live)
            pos, d = segment.ivf.exact_all(queries, min(segment.n, k + min(dead, 256)))
            gone = (pos < 0) | segment.deleted[np.maximum(pos, 0)]
            d = np.where(gone, np.inf, d)
            order = np.argsort(d, axis=1, kind="stable")[:, :k]
            d = np.take_along_axis(d, order, axis=1)
            pos = np.take_along_axis(pos, order, axis=1)
            merged = np.concatenate([dists, d], axis=1)
            labels = [row + [segment.id_of(p) if p >= 0 else "" for p in prow]
                      for row, prow in zip(names, pos.tolist())]
            top = np.argsort(merged, axis=1, kind="stable")[:, :k]
            dists = np.take_along_axis(merged, top, axis=1)
            names = [[row[i] for i in trow] for row, trow in zip(labels, top.tolist())]
        return [[name for name, d in zip(row, drow) if name and np.isfinite(d)] for row, drow in zip(names, dists.tolist())]

    # ------------------------------------------------------------ shared codebook
    def shared_codebook(self, incoming: Sequence[np.ndarray] = ()) -> Codebook | None:
        """The collection's shared codebook, trained now (CPU heavy: call with no lock held)
        when there is none yet and the sealed live rows plus ``incoming`` (row blocks about
        to be sealed) reach SHARED_FROM; None below that."""
        with self._codebook_lock:
            if self.coarse is not None:
                return self.coarse.codebook
            historical = sum(s.live for s in self.segments)
            rows = historical + sum(len(block) for block in incoming)
            if rows < SHARED_FROM:
                return None
            self._install(*self._train_codebook(incoming, max(rows, len(self))))
            assert self.coarse is not None
            return self.coarse.codebook

    @property
    def codebook_due(self) -> bool:
        """The shared codebook should be (re)trained: none exists yet over SHARED_FROM live
        historical rows (sealed by an older release, or by small migrations), or the rows
        outgrew its lists CODEBOOK_GROWTH times."""
        historical = sum(s.live for s in self.segments)
        if self.coarse is None:
            return historical >= SHARED_FROM
        return historical > CODEBOOK_GROWTH * max(1, self.codebook_rows)

    def retrain_codebook(self) -> bool:
        """Train a new shared codebook on a sample of the live historical rows, sized for
        them, when :attr:`codebook_due` (CPU heavy, no lock held). New segments use it at
        once; the segments filled from an older codebook keep being searched each on its
        own until the rebalance job rebuilds them (:meth:`stale_segments`). False when not due."""
        with self._codebook_lock:
            if not self.codebook_due:
                return False
            rows = max(sum(s.live for s in self.segments), len(self))
            self._install(*self._train_codebook((), rows))
            return True

    def stale_segments(self) -> list[int]:
        """Seqs of live segments not filled from the shared codebook (none without one)."""
        coarse = self.coarse
        if coarse is None:
            return []
        return [s.seq for s in self.segments if s.live and s.codebook != coarse.id]

    def _install(self, codebook: Codebook, rows: int) -> None:
        self.coarse = Coarse(codebook)
        self.codebook_rows = rows
        self.version = next(_VERSIONS)

    def _train_codebook(self, incoming: Sequence[np.ndarray], rows: int) -> tuple[Codebook, int]:
        """A codebook sized for ``rows`` historical rows, trained on a seeded sample of the
        ``incoming`` blocks and the sealed live rows, drawn in proportion to their sizes."""
        # sized for the middle of the rows it will serve: it is retrained at CODEBOOK_GROWTH x
        nlist = self.config.ivf_nlist or shared_nlist(int(rows * math.sqrt(CODEBOOK_GROWTH)))
        with self._lock.read():
            sources: list[tuple[Callable[[np.ndarray], np.ndarray], int]] = [
                (lambda pos, b=block: b[pos], len(block)) for block in incoming if len(block)]
            for segment in self.segments:
                if segment.live:
                    live = np.flatnonzero(~segment.deleted)
                    sources.append((lambda pos, s=segment, l=live: s.ivf.vectors(l[pos]), len(live)))
        total = sum(n for _, n in sources)
        want = min(total, max(TRAIN_POINTS_PER_LIST * nlist, 100_000))
        rng = np.random.default_rng(len(self.segments))
        blocks = []
        for take, n in sources:
            count = min(n, int(round(want * n / total)))
            if count:
                blocks.append(take(np.sort(rng.choice(n, count, replace=False))))
        sample = np.concatenate(blocks) if blocks else np.zeros((0, self.config.dimension), np.float32)
        return train_codebook(self.config, sample, nlist), rows

    # ---------------------------------------------------------------- migration
    def plan_migration(self, now: float | None = None, max_records: int = 1_000_000) -> MigrationPlan | None:
        """The oldest recent records past the threshold, grouped by window (read lock)."""
        cutoff = (now or time.time()) - self.config.recent_threshold_s
        with self._lock.read():
            r = self.recent
            stamps = r.timestamps[: r.next]
            labels = np.flatnonzero(r.live[: r.next] & (stamps < cutoff))
            if not len(labels):
                return None
            if len(labels) > max_records:
                labels = labels[np.argsort(stamps[labels], kind="stable")[:max_records]]
            windows_of = np.floor(stamps[labels] / self.config.window_s).astype(np.int64)
            # Consecutive windows share a segment until it holds segment_records records, so a
            # backfill of years of data does not become hundreds of tiny segments.
            groups: list[list[int]] = []
            size = 0
            unique, counts = np.unique(windows_of, return_counts=True)
            for window, count in zip(unique.tolist(), counts.tolist()):
                if not groups or size >= self.config.segment_records:
                    groups.append([])
                    size = 0
                groups[-1].append(window)
                size += count
            windows: dict[int, dict[str, Any]] = {}
            for group in groups:
                chosen = np.sort(labels[np.isin(windows_of, group)])
                windows[group[0]] = {
                    "labels": chosen, "vectors": r.vectors[chosen].copy(), "last_window": group[-1],
                    "ids": [r.ids[i] for i in chosen.tolist()], "timestamps": r.timestamps[chosen].copy(),
                    "raw_metadata": r.metadata.raw_many(chosen), "payload": r.payload.take(chosen),
                    "marks": r.metadata.offsets_of(chosen),
                }
            return MigrationPlan(cutoff, windows)

    def build_migration(self, plan: MigrationPlan, directory: Path,
                        codebook: Codebook | None = None) -> list[SealedSegment]:
        """One sealed segment per window of ``plan`` (CPU heavy, no lock held), each filled
        from ``codebook``, by default the collection's shared one (trained here on a sample
        of the plan's and the sealed rows when none exists and they are SHARED_FROM or
        more; below that each segment trains its own)."""
        if codebook is None:
            codebook = self.shared_codebook([part["vectors"] for part in plan.windows.values()])
        built = []
        for window, part in sorted(plan.windows.items()):
            with self._seq_lock:
                seq, self._next_seq = self._next_seq, self._next_seq + 1
            path = segment_file(directory, self.config.name, seq)
            built.append(SealedSegment.build(seq, window, self.config, part["vectors"], part["ids"],
                                             part["timestamps"], None, path, part["raw_metadata"], part["payload"],
                                             codebook))
        return built

    def commit_migration(self, plan: MigrationPlan, segments: list[SealedSegment]) -> int:
        """Swap migrated records from the recent tier into ``segments`` in one step.

        A record changed or deleted since planning keeps its newer state: its copy in the
        new segment becomes a tombstone. Returns the number of records moved.
        """
        moved = 0
        with self._lock.write():
            r = self.recent
            for segment, (window, part) in zip(segments, sorted(plan.windows.items())):
                labels = part["labels"]
                # a fresh label per write: a label still live is the very version we copied
                same = r.live[labels]
                for pos in np.flatnonzero(~same).tolist():
                    segment.delete(pos)
                edited = same & (r.metadata.offsets_of(labels) != part["marks"])
                for pos in np.flatnonzero(edited).tolist():  # metadata edited after planning
                    current = r.metadata[int(labels[pos])]
                    if current is not None:
                        segment.set_metadata(pos, current)
                r.retire_many(labels[same])
                moved += int(same.sum())
                self.segments.append(segment)
            self.version = next(_VERSIONS)
        return moved

    @property
    def needs_compaction(self) -> bool:
        """Tombstones outnumber live records in the recent tier (e.g. after a migration)."""
        return self.recent.tombstones > max(1024, len(self.recent.labels))

    @property
    def tombstone_ratio(self) -> float:
        """Retired labels of the recent tier over retired plus live ones (0.0 when empty)."""
        dead = self.recent.tombstones
        return dead / (dead + len(self.recent.labels)) if dead else 0.0

    def compact(self, num_threads: int = 1, min_ratio: float | None = None, graph: bool = True) -> bool:
        """Rebuild the recent tier without its tombstones so memory really goes down.

        Due when :attr:`needs_compaction` says so or, with ``min_ratio``, when
        :attr:`tombstone_ratio` reaches it. The new graph is built from a copy with no lock
        held (searches and writes go on); then, under the write lock, writes made meanwhile
        are replayed onto it and it replaces the old tier. With ``graph=False`` the new tier's
        records stay pending (searched exactly) for a later ``drain``: a bulk load that
        migrates in rounds compacts after each round without rebuilding the graph every
        time. Returns False when there was nothing worth compacting."""
        with self._lock.read():
            due = self.needs_compaction if min_ratio is None else (
                self.recent.tombstones > 0 and self.tombstone_ratio >= min_ratio)
            if not due:
                return False
            old = self.recent
            marker = old.next
            live = np.flatnonzero(old.live[:marker])
            batch = Batch([old.ids[i] for i in live.tolist()], old.vectors[live].copy(),  # type: ignore[misc]
                          old.metadata.many(live), old.timestamps[live].copy())
            marks = old.metadata.offsets_of(live)
        fresh = RecentTier(self.config, self._scratch, capacity=max(1024, len(live) * 5 // 4 + 16))
        if len(live):
            fresh.append(batch)
        cutoff = time.time() - self.config.recent_threshold_s
        while graph and fresh.drain(4096, num_threads, cutoff):
            pass
        with self._lock.write():
            if self.recent is not old:
                return False
            gone = [n for n, label in enumerate(live.tolist()) if not old.live[label]]
            if gone:
                fresh.retire_many(np.asarray(gone, np.int64))
            edited = old.live[live] & (old.metadata.offsets_of(live) != marks)
            for n in np.flatnonzero(edited).tolist():  # metadata edited meanwhile
                current = old.metadata[int(live[n])]
                if current is not None:
                    fresh.set_metadata(n, current)
            newer = np.flatnonzero(old.live[marker:old.next]) + marker
            if len(newer):
                fresh.append(Batch([old.ids[i] for i in newer.tolist()], old.vectors[newer].copy(),  # type: ignore[misc]
                                   old.metadata.many(newer), old.timestamps[newer].copy()))
            fresh.hnsw.set_ef(old.ef)
            fresh.ef = old.ef
            self.recent = fresh
            self.version = next(_VERSIONS)
        return True

    # ------------------------------------------------- segment upkeep (rebuilds)
    def segment_report(self) -> list[dict[str, Any]]:
        """Per sealed segment: rows, live rows, deleted ratio and, for segments whose IVF
        index is loaded, inverted-list skew over live rows and over all rows (as built).
        Read lock; an unloaded segment is not loaded for this (its skew is None)."""
        with self._lock.read():
            out = []
            for segment in self.segments:
                loaded = bool(getattr(segment.ivf, "loaded", True))
                entry: dict[str, Any] = {"seq": segment.seq, "window": segment.window, "rows": segment.n,
                                         "live": segment.live, "loaded": loaded,
                                         "deleted_ratio": round(1.0 - segment.live / segment.n, 4) if segment.n else 0.0,
                                         "nlist": None, "skew": None, "built_skew": None,
                                         "shared": self.coarse is not None and segment.codebook == self.coarse.id}
                if loaded:
                    entry["nlist"] = segment.ivf.nlist
                    entry["skew"] = round(list_skew(segment.ivf.list_sizes(segment.deleted)), 4)
                    entry["built_skew"] = round(list_skew(segment.ivf.list_sizes()), 4)
                out.append(entry)
            return out

    def plan_rebuild(self, seq: int | Sequence[int]) -> SegmentRebuild | None:
        """Copy the live rows of segment ``seq`` (or of the segments ``seq``, merged into one,
        in the order given) for :meth:`build_rebuild` (read lock); None if a segment is gone."""
        seqs = [seq] if isinstance(seq, int) else list(seq)
        with self._lock.read():
            by_seq = {s.seq: s for s in self.segments}
            if not seqs or any(n not in by_seq for n in seqs) or len(set(seqs)) != len(seqs):
                return None
            sources: list[RebuildSource] = []
            vectors, ids, stamps, raw = [], [], [], []
            for n in seqs:
                segment = by_seq[n]
                positions = np.flatnonzero(~segment.deleted)
                sources.append(RebuildSource(segment, positions, dict(segment.overlay)))
                vectors.append(segment.ivf.vectors(positions))
                ids.extend(segment.id_of(pos) for pos in positions.tolist())
                stamps.append(segment.timestamps[positions])
                raw.extend(segment.overlay.get(pos) or segment.metadata[pos] for pos in positions.tolist())
            return SegmentRebuild(sources, np.concatenate(vectors), ids, np.concatenate(stamps), raw)

    def merge_candidates(self, small: float = 0.25) -> list[list[int]]:
        """Runs of consecutive segments (in the collection's order) whose live rows are each
        under ``small`` x ``segment_records``, grouped while their sum stays within
        ``segment_records``; only runs of two or more. Incremental migrations (one per interval) leave one small
        segment each, and every segment costs a search its own fixed overhead."""
        limit = self.config.segment_records
        with self._lock.read():
            groups: list[list[int]] = []
            run: list[int] = []
            total = 0
            for segment in self.segments:
                if segment.live >= small * limit or total + segment.live > limit:
                    if len(run) > 1:
                        groups.append(run)
                    run, total = [], 0
                    if segment.live >= small * limit:
                        continue
                run.append(segment.seq)
                total += segment.live
            if len(run) > 1:
                groups.append(run)
            return groups

    def build_rebuild(self, plan: SegmentRebuild, directory: Path,
                      codebook: Codebook | None = None) -> SealedSegment | None:
        """A replacement segment over the planned live rows (CPU heavy, no lock held), filled
        from ``codebook``, by default the shared one as :meth:`build_migration` has it;
        None when the segments had no live rows (they are simply removed)."""
        if not plan.rows:
            return None
        if codebook is None:
            codebook = self.shared_codebook([plan.vectors])
        with self._seq_lock:
            seq, self._next_seq = self._next_seq, self._next_seq + 1
        path = segment_file(directory, self.config.name, seq)
        return SealedSegment.build(seq, plan.segment.window, self.config, plan.vectors, plan.ids, plan.timestamps,
                                   decode_many(plan.raw_metadata), path, plan.raw_metadata, codebook=codebook)

    def commit_rebuild(self, plan: SegmentRebuild, built: SealedSegment | None) -> bool:
        """Swap ``built`` in for the planned segments (write lock), replaying deletes and
        metadata edits made since planning; it takes the first one's place. False if any of
        them is gone (then nothing changed and the caller closes ``built``); the old
        segments are the caller's to close."""
        with self._lock.write():
            places = [next((n for n, s in enumerate(self.segments) if s is source.segment), None)
                      for source in plan.sources]
            if any(place is None for place in places):
                return False
            offset = 0
            for source in plan.sources:
                old = source.segment
                if built is not None:
                    for new_pos in np.flatnonzero(old.deleted[source.positions]).tolist():
                        built.delete(offset + new_pos)
                    for pos, raw in old.overlay.items():
                        if source.overlay.get(pos) is not raw:  # metadata edited since planning
                            new_pos = int(np.searchsorted(source.positions, pos))
                            if new_pos < len(source.positions) and source.positions[new_pos] == pos:
                                built.set_metadata(offset + new_pos, old.meta(pos))
                offset += len(source.positions)
            drop = {p for p in places if p is not None}
            first = min(drop)
            if built is None:  # no live rows then, and a segment never gains rows
                self.segments = [s for n, s in enumerate(self.segments) if n not in drop]
            else:
                self.segments = [built if n == first else s for n, s in enumerate(self.segments)
                                 if n == first or n not in drop]
            self.version = next(_VERSIONS)
        return True

    # -------------------------------------------------------------- persistence
    def snapshot(self) -> CollectionSnapshot:
        """Copy the state (read lock: searches continue, mutations wait; a drain in
        progress finishes first, so the saved graph holds exactly the published labels)."""
        with self._drain_mutex, self._lock.read():
            recent = self.recent.to_parts()
            recent["tuned"] = dict(self.tuned)
            coarse = self.coarse
            return CollectionSnapshot(self.config, recent, [(s, s.mutable_parts(), s.version) for s in self.segments],
                                      None if coarse is None else (coarse.codebook, self.codebook_rows))

    @classmethod
    def restore(cls, config: CollectionConfig, recent: dict[str, Any], segments: list[SealedSegment],
                scratch_dir: Path, codebook: tuple[Codebook, int] | None = None) -> Collection:
        self = cls(config, scratch_dir)
        self.recent = RecentTier.from_parts(config, recent, scratch_dir)
        self.tuned = {k: v for k, v in (recent.get("tuned") or {}).items() if isinstance(v, (int, float, str))}
        if codebook is not None:
            self._install(*codebook)
        self.segments = sorted(segments, key=lambda s: s.seq)
        self._next_seq = max((s.seq for s in segments), default=-1) + 1
        return self

    def close(self) -> None:
        for segment in self.segments:
            segment.close()


_EF_STEPS: Final = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
_NPROBE_STEPS: Final = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
_EF_CALIBRATE_FROM: Final = 1000


def _without(found: list[list[str]], own: list[str], k: int) -> list[list[str]]:
    """Each row's ids without the query's own record, cut to ``k``."""
    return [[i for i in row if i != me][:k] for row, me in zip(found, own)]


def _exact_ids(queries: np.ndarray, tiers: list[tuple[np.ndarray, list[str]]], k: int, space: str) -> list[list[str]]:
    """Exact top-``k`` ids over several row blocks (chunked: blocks may be large)."""
    count = len(queries)
    best_d = np.full((count, 0), np.inf, np.float32)
    best_g = np.zeros((count, 0), np.int64)
    names: list[str] = []
    for rows, ids in tiers:
        for start in range(0, len(rows), 65_536):
            block = np.asarray(rows[start:start + 65_536], np.float32)
            if space == "ip":
                dist = 1.0 - queries @ block.T
            else:
                dist = (np.einsum("ij,ij->i", block, block)[None, :] - 2 * queries @ block.T
                        + np.einsum("ij,ij->i", queries, queries)[:, None])
            index = np.broadcast_to(np.arange(len(names) + start, len(names) + start + len(block)), dist.shape)
            merged_d = np.concatenate([best_d, dist.astype(np.float32)], axis=1)
            merged_g = np.concatenate([best_g, index], axis=1)
            top = np.argsort(merged_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(merged_d, top, axis=1)
            best_g = np.take_along_axis(merged_g, top, axis=1)
        names.extend(ids)
    return [[names[g] for g in row] for row in best_g.tolist()]


def _recall(got: list[list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(g) & set(t)) for g, t in zip(got, truth))
    return round(hits / max(1, sum(len(t) for t in truth)), 4)


def _concat(a: Candidates, b: Candidates) -> Candidates:
    return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])


def _ivf_of(segment: SealedSegment) -> IvfSegment:
    ivf = segment.ivf
    return ivf.get() if isinstance(ivf, LazyIvf) else ivf


def _rows_of(pos: np.ndarray, dist: np.ndarray) -> list[Candidates]:
    """Per-query candidates from (nq, k) positions and distances padded with -1."""
    out = []
    for row in range(len(pos)):
        keep = pos[row] >= 0
        out.append((pos[row][keep], dist[row][keep]))
    return out


def _parts(index: int, result: list[Any]) -> list[tuple[int, list[Candidates]]]:
    """A search job's result as (segment index, candidates per query) pairs."""
    return [(index, result[0])] if index >= -1 else result


def _timed(fn: Callable[[], list[Any]], deadline: float | None,
           finished: list[float] | None = None, limit: float | None = None) -> list[Any] | None:
    if deadline is not None and time.monotonic() > deadline:
        return None
    if limit is None:  # inline, or no limit: the calling thread's own (if any) holds
        result = fn()
    else:
        with time_limit(limit):
            result = fn()
    if finished is not None:
        finished.append(time.perf_counter())
    return result
