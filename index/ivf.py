"""The historical tier: an immutable IVF segment over the vectors of one sealed time window.

faiss holds compressed codes (4-bit fast-scan PQ by default, SQ8, 8-bit PQ, or
uncompressed "flat") in inverted lists; the full-precision vectors live in a read-only
memory-mapped file that the segment owns.  A search asks faiss for
``max(k * rerank, MIN_FETCH)`` candidates (k for the uncompressed kinds) and re-ranks them exactly from the memory map, so the distances returned are exact and recall is
bounded by the probed lists, not by the quantiser.  Filters (an ``allowed`` mask and the
``deleted`` tombstones) are applied inside faiss by an ID selector, so they cost no
recall beyond what nprobe costs.

Distances follow the HNSW tier: ``1 - <q, x>`` for "cosine" (vectors pre-normalised) and
"ip", squared L2 for "l2"; lower is better.

Thread safety: an ``IvfSegment`` is immutable; ``search``, ``exact`` and ``vectors`` may
run in parallel threads (faiss releases the GIL).  ``close`` must not overlap them.

OpenMP: libgomp keeps the thread count per calling thread, so setting it once at start-up
would not reach the executor's threads; every call sets its own and restores it.  A
single query runs on 1 thread (faiss parallelises IVF search over queries, so a second
thread only adds overhead: p50 0.72 vs 0.88 ms at 20k rows), a batch on 2
(``BATCH_THREADS``), a build on 1 (background work beside the searches).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Final

import faiss
import numpy as np

from .errors import DimensionMismatch
from .scratch import file_backed

_SWIG: Any = faiss  # faiss's bundled stubs lack or mistype several SWIG names used here

QUANTIZERS: Final = ("pq4", "sq8", "pq", "flat")
IVF_METRICS: Final = ("cosine", "ip", "l2")
EXHAUSTIVE_BELOW: Final = 1000
"""Segments with fewer rows use one exact flat index: a scan of < 1000 rows is cheaper
than training k-means, and k-means wants >= 39 points per list anyway."""
MIN_POINTS_PER_LIST: Final = 39
SCALE_FROM: Final = 100_000
NLIST_GROWTH: Final = 0.2
"""auto_nlist: segments above SCALE_FROM rows get (n / SCALE_FROM) ** NLIST_GROWTH times the lists."""
TRAIN_SAMPLE: Final = 100_000
TRAIN_POINTS_PER_LIST: Final = 64
"""k-means samples per list for a shared codebook (4,096 lists train on 262k rows)."""
SHARED_MIN_LISTS: Final = 64
SHARED_MAX_LISTS: Final = 16_384
MIN_FETCH: Final = {"pq4": 160, "sq8": 50, "pq": 50, "flat": 50}
"""Fewest candidates re-ranked per query: 4-bit codes rank coarser than SQ8, so they need
a deeper pool (MiniLM 100k, nprobe 16: 0.950 at 50, 0.965 at 100, the SQ8 level; 160 leaves margin
when tombstones or filters thin the pool)."""
SEED: Final = 1234
BATCH_THREADS: Final = 2
"""OpenMP threads for a batched search (nq > 1); a single query runs on one thread."""
BUILD_THREADS: Final = 1
"""OpenMP threads for training and adding: a build is background work beside searches."""


@dataclass(frozen=True, slots=True)
class IvfParams:
    """How a segment is built and searched; ``nlist=None`` picks :func:`auto_nlist`."""

    quantizer: str = "pq4"
    nlist: int | None = None
    pq_m: int = 48
    nprobe: int = 16
    rerank: int = 4

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer: must be one of {', '.join(QUANTIZERS)}")
        if self.nlist is not None and (not _is_int(self.nlist) or self.nlist < 1):
            raise ValueError("nlist: must be a positive integer or None (automatic)")
        if not _is_int(self.pq_m) or self.pq_m < 1:
            raise ValueError("pq_m: must be a positive integer")
        if not _is_int(self.nprobe) or self.nprobe < 1:
            raise ValueError("nprobe: must be a positive integer")
        if not _is_int(self.rerank) or self.rerank < 1:
            raise ValueError("rerank: must be a positive integer")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IvfParams:
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def auto_nlist(n: int, nprobe: int) -> int:
    """Lists for ``n`` rows: ``2.5 * nprobe`` up to 100k rows (the default nprobe scans 40%
    of them), growing as ``(n / 100k) ** 0.2`` above, with at least 39 rows per list for
    k-means.

    Real text embeddings cluster poorly: on MiniLM (20k and 100k rows) recall@10 at a
    fixed nprobe depends on nprobe / nlist (4*sqrt(n) lists gave 0.84 at nprobe 16), and
    0.95 needs ~35-40% probed.  The share needed falls as a segment grows: on 1M
    MiniLM-derived rows (PQ4, 160 re-ranked) 20% probed gave 0.946, 16% of 200 lists
    0.958, 12.7% 0.919.  The growth keeps ~25% probed at 1M rows (63 lists), so one 1M
    segment costs ~0.8 ms per query where ten 100k segments at 40% cost ~3 ms."""
    scale = max(1.0, n / SCALE_FROM) ** NLIST_GROWTH
    return max(1, min(int(2.5 * nprobe * scale), n // MIN_POINTS_PER_LIST))


def shared_nlist(n: int) -> int:
    """Lists of a codebook shared by every segment of a collection expected to hold ``n``
    historical rows: the power of two nearest ``sqrt(n)`` (1,024 at 1M rows, 4,096 at
    10M: on MiniLM 1M, 1,024 and 4,096 lists had the same recall/latency frontier; at
    10M, faiss alone with 4,096 lists reached recall 0.968 scanning 3 % of the rows where
    1,024 lists needed 6 % for 0.95), within SHARED_MIN_LISTS..SHARED_MAX_LISTS
    and at least 39 rows per list. The coarse search stays flat: over 2,048 MiniLM
    centroids it takes 0.11-0.13 ms, an HNSW graph over them (ef 2 x nprobe, 99.5-99.97 %
    of the same lists) 0.11-0.26 ms.
    With one coarse search for all segments the list count sets the scan per probe, and
    the calibrated nprobe (see Collection.calibrate) sets the recall."""
    want = 2 ** round(math.log2(max(math.sqrt(max(n, 1)), 1.0)))
    return max(1, min(max(SHARED_MIN_LISTS, min(want, SHARED_MAX_LISTS)), n // MIN_POINTS_PER_LIST))


def widen(found: np.ndarray, want: int, probe: int, nlist: int,
          again: Callable[[np.ndarray, int], np.ndarray]) -> None:
    """While some rows of ``found`` (candidates per query, -1 padded) hold fewer than
    ``want``, probe x4 lists for those rows, up to ``nlist``: ``again(rows, nprobe)``
    returns their new candidates, written into ``found`` in place. A selective filter
    leaves few matching rows per list; this finds them without probing more for all."""
    while probe < nlist:
        short = np.flatnonzero(np.count_nonzero(found >= 0, axis=1) < want)
        if not len(short):
            return
        probe = min(nlist, probe * 4)
        found[short] = again(short, probe)


def list_skew(sizes: np.ndarray) -> float:
    """How unevenly rows fill the inverted lists: the largest list over the mean list
    (1.0 = perfectly even; an empty segment counts as even)."""
    total = int(np.sum(sizes))
    if total <= 0 or len(sizes) == 0:
        return 1.0
    return float(np.max(sizes)) * len(sizes) / total


def _pq_shape(d: int, m: int, n_train: int) -> tuple[int, int]:
    """Subquantisers (largest divisor of d <= m) and bits per code (<= 8, >= 39 points per centroid)."""
    m = max(x for x in range(1, min(m, d) + 1) if d % x == 0)
    nbits = max(1, min(8, int(math.log2(max(n_train // MIN_POINTS_PER_LIST, 2)))))
    return m, nbits


PQ4_DIMS_FROM: Final = 256
"""Fast-scan codes cover 4 dimensions per 4-bit subquantiser from this width up, 2 below:
16 centroids cannot rank 5-d pieces of 50-d GloVe (1M rows: recall 0.93 with every list
probed and 2,560 candidates re-ranked), and narrow vectors make wider codes cheap."""


def _pq4_m(d: int) -> int:
    """Fast-scan subquantisers: the largest divisor of d covering at least 4 dimensions each
    (2 below PQ4_DIMS_FROM)."""
    least = 4 if d >= PQ4_DIMS_FROM else 2
    return max(x for x in range(1, max(1, d // least) + 1) if d % x == 0)


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


class OmpThreads:
    """Set this thread's OpenMP thread count for one call (libgomp keeps it per thread)."""

    __slots__ = ("_want", "_before")

    def __init__(self, want: int) -> None:
        self._want = want
        self._before = 0

    def __enter__(self) -> None:
        self._before = faiss.omp_get_max_threads()
        if self._before != self._want:
            faiss.omp_set_num_threads(self._want)

    def __exit__(self, *exc: object) -> None:
        if self._before != self._want:
            faiss.omp_set_num_threads(self._before)


def _check_rows(vectors: np.ndarray) -> np.ndarray:
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError("vectors: must be a non-empty (n, d) array")
    if not np.isfinite(data).all():
        raise ValueError("vectors: contain NaN or infinite values")
    return data


@dataclass(frozen=True, slots=True, eq=False)
class Codebook:
    """A trained coarse quantizer plus the code quantizer's state (PQ/SQ tables), kept as
    an empty faiss index serialised to bytes, with the metric and the resolved params.

    Training is separate from filling so that one codebook serves every segment of a
    collection: their inverted lists then share centroids and code tables, one coarse
    search picks the lists of all of them and their approximate distances compare, so the
    candidates of every segment are re-ranked together (:meth:`IvfSegment.scan`).
    Immutable: :meth:`IvfSegment.build` fills a fresh copy (:meth:`empty_index`).
    ``id`` names the content (a hash of the index bytes); segments built from it carry it."""

    metric: str
    dim: int
    params: IvfParams  # nlist and pq_m resolved; nlist 1 = one exhaustive flat index
    index: bytes  # faiss.serialize_index of the trained, empty index

    @classmethod
    def train(cls, sample: np.ndarray, metric: str, params: IvfParams) -> Codebook:
        """Train on ``sample`` (n, d) float32, already normalised for cosine. The lists
        (:func:`auto_nlist`) are sized for n rows, of which at most TRAIN_SAMPLE (a seeded
        choice) train; below EXHAUSTIVE_BELOW rows the codebook is an exact flat index.
        Deterministic for equal input. Raises ValueError on bad params, metric or sample."""
        params.validate()
        if metric not in IVF_METRICS:
            raise ValueError(f"metric: must be one of {', '.join(IVF_METRICS)}")
        data = _check_rows(sample)
        index, resolved = _train(data, metric, params)
        return cls(metric, int(data.shape[1]), resolved, faiss.serialize_index(index).tobytes())

    def empty_index(self) -> Any:
        """A new faiss index, trained and empty, for one segment to fill."""
        return faiss.deserialize_index(np.frombuffer(self.index, dtype=np.uint8))

    @property
    def id(self) -> str:
        """A content hash of the trained index: equal ids, equal codebooks."""
        return codebook_id(self.index)

    @property
    def nlist(self) -> int:
        return int(self.params.nlist or 1)

    def to_parts(self) -> dict[str, Any]:
        """The codebook as plain data (no pickle): metric, dim, resolved params, index bytes."""
        return {"metric": self.metric, "dim": self.dim, "params": self.params.to_dict(), "index": self.index}

    @classmethod
    def from_parts(cls, parts: dict[str, Any]) -> Codebook:
        """Restore :meth:`to_parts` output. Raises ValueError naming the first bad part."""
        params = IvfParams.from_dict(parts["params"])
        params.validate()
        metric, dim = parts["metric"], parts["dim"]
        if metric not in IVF_METRICS:
            raise ValueError(f"metric: must be one of {', '.join(IVF_METRICS)}")
        if not _is_int(dim) or dim < 1:
            raise ValueError("dim: must be a positive integer")
        codebook = cls(metric, int(dim), params, bytes(parts["index"]))
        index = codebook.empty_index()
        if index.d != dim or index.metric_type != _faiss_metric(metric) or not index.is_trained or index.ntotal:
            raise ValueError("index: not a trained, empty index of this dimension and metric")
        return codebook


def codebook_id(index_bytes: bytes) -> str:
    return hashlib.blake2b(index_bytes, digest_size=16).hexdigest()


class Coarse:
    """The coarse quantizer of a shared codebook, loaded once for searching: which lists
    a query probes, for every segment built from that codebook. Thread safe."""

    __slots__ = ("codebook", "id", "_quantizer", "_owner")

    def __init__(self, codebook: Codebook) -> None:
        self.codebook = codebook
        self.id = codebook.id
        self._owner: Any = codebook.empty_index()
        ivf = faiss.try_extract_index_ivf(self._owner)
        if ivf is None:
            raise ValueError("codebook: an exhaustive (flat) codebook has no lists to share")
        self._quantizer: Any = ivf.quantizer  # owned by _owner

    @property
    def nlist(self) -> int:
        return self.codebook.nlist

    def assign(self, queries: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``nprobe`` nearest lists of each query row: (distances, list numbers)."""
        probe = max(1, min(int(nprobe), self.nlist))
        with OmpThreads(1 if len(queries) == 1 else BATCH_THREADS):
            dist, lists = self._quantizer.search(queries, probe)
        return np.ascontiguousarray(dist, np.float32), np.ascontiguousarray(lists, np.int64)

    def memory_bytes(self) -> int:
        return len(self.codebook.index)


class SharedLists:
    """The inverted lists of several segments filled from one codebook, merged into one
    faiss index (a copy of their codes and ids), so that a query scans the lists it
    probes in every segment with one faiss call: one code table per query and one
    top-``fetch`` heap instead of one per segment (2M rows in ten segments: 0.48 ms
    merged against 2.58 ms per segment at 4,096 lists, nprobe 64, equal recall).

    A merged row's label is ``bases[slot] + position``; bases are multiples of 8, so
    the selector bitmap of the whole view is the segments' packed bitmaps joined byte
    by byte (:meth:`bitmap`). Immutable once built: a new segment makes a new view."""

    __slots__ = ("members", "bases", "_index", "_ivf", "nbytes", "_memory")

    def __init__(self, coarse: Coarse, members: tuple[IvfSegment, ...]) -> None:
        bases, end = [], 0
        for segment in members:
            if segment.codebook != coarse.id:
                raise ValueError("segment: was not filled from this codebook")
            bases.append(end)
            end += ((segment.n + 7) // 8) * 8
        index = coarse.codebook.empty_index()
        _merge_lists(index, members, bases)
        self.members = members
        self.bases = np.asarray(bases, np.int64)
        self._index: Any = index
        self._ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(index))
        self.nbytes = (end + 7) // 8  # bitmap bytes over every label
        lists = self._ivf.invlists
        sizes = np.fromiter((lists.list_size(i) for i in range(lists.nlist)), np.int64, lists.nlist)
        per_block = max(1, int(getattr(lists, "n_per_block", 1) or 1))
        code_bytes = int(getattr(lists, "block_size", 0) or 0) or int(self._ivf.code_size) * per_block
        self._memory = int((-(-sizes // per_block)).sum() * code_bytes + sizes.sum() * 8)

    def bitmap(self, parts: list[np.ndarray | None]) -> np.ndarray | None:
        """One selector bitmap over every label from each member's packed bitmap (None:
        every row of that member allowed; a zero-length array: none); None when all are None."""
        if all(part is None for part in parts):
            return None
        out = np.empty(self.nbytes, np.uint8)
        for slot, (segment, part) in enumerate(zip(self.members, parts)):
            at, size = int(self.bases[slot]) // 8, (segment.n + 7) // 8
            out[at:at + size] = 0xFF if part is None else (part if len(part) else 0)
        return out

    def locate(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(member slot, position in that member) of merged labels; -1 labels give slot 0
        and position -1."""
        slot = np.maximum(np.searchsorted(self.bases, labels, side="right") - 1, 0)
        position = np.where(labels >= 0, labels - self.bases[slot], -1)
        return slot.astype(np.int32), position

    def scan(self, queries: np.ndarray, fetch: int, lists: np.ndarray, list_dist: np.ndarray,
             allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`IvfSegment.scan` over every member at once; labels are merged labels."""
        q = np.ascontiguousarray(queries, np.float32)
        return _scan(self._ivf, q, max(1, int(fetch)), lists, list_dist, allowed)

    def memory_bytes(self) -> int:
        """Codes (in SIMD blocks) and ids held by the view: a copy of its members'."""
        return self._memory


def _merge_lists(index: Any, members: tuple[IvfSegment, ...], bases: list[int]) -> None:
    """Fill the empty fast-scan ``index`` with every list of ``members`` (ids shifted by
    their ``bases``), each list added in one call: the members' full SIMD blocks copied as
    they are, then their partial last blocks unpacked, joined and packed anew (order
    within a list does not matter; the ids follow the codes). ~0.4 s for 2,048 lists at
    any row count, where unpacking every block cost 1.4 s per million rows.
    Not faiss's merge_from: its BlockInvertedLists.add_entries copies the whole list again
    past the end of the buffer when a list already holds a non-zero multiple of
    block_size entries (faiss 1.15; a 10M merge crashed with a corrupted heap)."""
    ivf = faiss.extract_index_ivf(index)
    packer = ivf.get_CodePacker()
    code, per_block, block = int(packer.code_size), int(packer.nvec), int(packer.block_size)
    sources = [(faiss.extract_index_ivf(m._live_index()).invlists, base) for m, base in zip(members, bases)]
    target = ivf.invlists
    unpacked = np.empty(per_block * code, np.uint8)
    for number in range(ivf.nlist):
        codes: list[np.ndarray] = []
        ids: list[np.ndarray] = []
        tail_codes: list[np.ndarray] = []
        tail_ids: list[np.ndarray] = []
        for lists, base in sources:
            n = lists.list_size(number)
            if not n:
                continue
            full, rest = divmod(n, per_block)
            packed = faiss.rev_swig_ptr(lists.get_codes(number), (full + (rest > 0)) * block)
            own = faiss.rev_swig_ptr(lists.get_ids(number), n) + base
            if full:
                codes.append(np.array(packed[:full * block]))
                ids.append(own[:full * per_block])
            if rest:
                packer.unpack_all(faiss.swig_ptr(packed[full * block:]), faiss.swig_ptr(unpacked))
                tail_codes.append(unpacked[:rest * code].copy())
                tail_ids.append(own[full * per_block:])
        if tail_codes:
            flat = np.concatenate(tail_codes)
            count = len(flat) // code
            flat = np.concatenate([flat, np.zeros((-count % per_block) * code, np.uint8)])
            tails = np.zeros(len(flat) // per_block // code * block, np.uint8)
            for b in range(len(tails) // block):
                packer.pack_all(faiss.swig_ptr(flat[b * per_block * code:]), faiss.swig_ptr(tails[b * block:]))
            codes.append(tails)
            ids.extend(tail_ids)
        if not ids:
            continue
        all_ids = np.ascontiguousarray(np.concatenate(ids), np.int64)
        all_codes = np.ascontiguousarray(np.concatenate(codes))
        target.add_entries(number, len(all_ids), faiss.swig_ptr(all_ids), faiss.swig_ptr(all_codes))
    index.ntotal = ivf.ntotal = sum(m.n for m in members)


def _scan(ivf: Any, q: np.ndarray, fetch: int, lists: np.ndarray, list_dist: np.ndarray,
          allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    nq, nprobe = lists.shape
    dist = np.empty((nq, fetch), np.float32)
    labels = np.empty((nq, fetch), np.int64)
    params = _SWIG.SearchParametersIVF(nprobe=nprobe) if allowed is None else \
        _SWIG.SearchParametersIVF(nprobe=nprobe, sel=_SWIG.IDSelectorBitmap(allowed))
    with OmpThreads(1 if nq == 1 else BATCH_THREADS):
        # faiss's Python wrapper of search_preassigned refuses params; the C entry takes them.
        ivf.search_preassigned_c(nq, faiss.swig_ptr(q), fetch, faiss.swig_ptr(lists), faiss.swig_ptr(list_dist),
                                 faiss.swig_ptr(dist), faiss.swig_ptr(labels), False, params)
    return dist, labels


def _train(data: np.ndarray, metric: str, params: IvfParams) -> tuple[Any, IvfParams]:
    n, d = data.shape
    fm = _faiss_metric(metric)
    if n < EXHAUSTIVE_BELOW:
        return faiss.IndexFlat(d, fm), dataclasses.replace(params, nlist=1)
    nlist = min(params.nlist or auto_nlist(n, params.nprobe), max(1, n // MIN_POINTS_PER_LIST))
    take = max(TRAIN_SAMPLE, TRAIN_POINTS_PER_LIST * nlist)
    if n > take:
        rows = np.sort(np.random.default_rng(SEED).choice(n, take, replace=False))
        sample = data[rows]
    else:
        sample = data
    pq_m = params.pq_m
    if params.quantizer == "pq4":
        # 4-bit PQ over 4 dimensions per code, scanned with SIMD lookups ("fast scan"):
        # 18x faster than SQ8 at equal recall after re-ranking, 1/8 of its memory.
        # L2 encodes residuals from the centroid ("fsr": without them a 16-d random set
        # lost true neighbours past rank 1000); inner product encodes the vectors
        # themselves (MiniLM: 0.965 vs 0.936 with residuals at nprobe 16).
        pq_m = _pq4_m(d)
        spec = f"IVF{nlist},PQ{pq_m}x4fs{'r' if metric == 'l2' else ''}"
    elif params.quantizer == "sq8":
        spec = f"IVF{nlist},SQ8"
    elif params.quantizer == "pq":
        pq_m, nbits = _pq_shape(d, params.pq_m, len(sample))
        # "np": no polysemous training (minutes of work that only serves Hamming
        # thresholding, which the exact re-rank makes pointless).
        spec = f"IVF{nlist},PQ{pq_m}x{nbits}np"
    else:
        spec = f"IVF{nlist},Flat"
    index = faiss.index_factory(d, spec, fm)
    faiss.extract_index_ivf(index).cp.seed = SEED
    if params.quantizer == "pq4":
        # 16 centroids per 4-d subspace settle fast: 10 k-means iterations train in
        # 0.47 s instead of 1.05 s (100k MiniLM rows) at equal recall.
        faiss.downcast_index(faiss.extract_index_ivf(index)).pq.cp.niter = 10
    with OmpThreads(BUILD_THREADS):
        index.train(sample)
    return index, dataclasses.replace(params, nlist=nlist, pq_m=pq_m)


class IvfSegment:
    """Immutable IVF segment over n vectors; rows are addressed by position 0..n-1.

    Thread-safe for concurrent searches (faiss releases the GIL); see the module docstring.
    """

    __slots__ = ("_index", "_ivf", "_vectors", "_path", "_metric", "_params", "_n", "_dim",
                 "_index_bytes", "_reranks", "codebook")

    def __init__(self, index: Any, vectors: np.ndarray, path: Path, metric: str,
                 params: IvfParams, index_bytes: int, codebook: str | None = None) -> None:
        self.codebook = codebook  # id of the codebook it was filled from (None: segments before 2026-12-08)
        self._index: Any = index
        ivf = faiss.try_extract_index_ivf(index)
        self._ivf: Any = None if ivf is None else faiss.downcast_index(ivf)  # a view owned by index
        if isinstance(ivf, faiss.IndexIVF) and isinstance(self._ivf, faiss.IndexIVFPQ) and ivf.by_residual:
            # The L2 precomputed table is nlist * m * 256 floats (62 MB at 100k rows), more
            # than the codes themselves; computing the tables per query is cheap.
            pq: Any = self._ivf
            pq.use_precomputed_table = -1
            pq.precomputed_table.resize(0)
        self._vectors: np.ndarray | None = vectors
        self._path = path
        self._metric = metric
        self._params = params
        self._n: int = int(vectors.shape[0])
        self._dim: int = int(vectors.shape[1])
        self._index_bytes = index_bytes
        # IVF-Flat and the exhaustive index score candidates exactly: fetching k is enough.
        self._reranks = self._ivf is not None and not isinstance(self._ivf, faiss.IndexIVFFlat)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, codebook: Codebook, path: Path) -> IvfSegment:
        """Fill a copy of ``codebook``'s trained, empty index with ``vectors`` (n, d) float32,
        already normalised for cosine; writes them to ``path`` (owned by the segment) and
        maps it read-only. The codebook is not changed, so one may serve many segments.
        Deterministic for equal input.  Raises DimensionMismatch when the widths differ,
        ValueError on bad vectors."""
        data = _check_rows(vectors)
        n, d = data.shape
        if d != codebook.dim:
            raise DimensionMismatch(f"vectors have {d} dimensions, the codebook {codebook.dim}")
        index = codebook.empty_index()
        with OmpThreads(BUILD_THREADS):
            index.add(data)
        # A round trip drops the slack that growing the inverted lists left behind, so
        # a built segment and a restored one are the same object of the same size.
        blob = faiss.serialize_index(index)
        del index
        index = faiss.deserialize_index(blob)
        return cls(index, file_backed(Path(path), data.data.cast("B"), np.float32, (n, d)), Path(path),
                   codebook.metric, codebook.params, len(blob), codebook.id)

    # -- properties -------------------------------------------------------------------

    @property
    def n(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def params(self) -> IvfParams:
        """The params as built: ``nlist`` and ``pq_m`` resolved (nlist 1 = exhaustive flat index)."""
        return self._params

    @property
    def nlist(self) -> int:
        """Inverted lists probed at most; 1 for the exhaustive flat index of a small segment."""
        return int(self._ivf.nlist) if self._ivf is not None else 1

    def list_sizes(self, deleted: np.ndarray | None = None) -> np.ndarray:
        """Rows per inverted list (int64, length :attr:`nlist`), not counting rows marked in
        the bool mask ``deleted``; the exhaustive flat index counts as one list."""
        if deleted is not None and (deleted.dtype != np.bool_ or deleted.shape != (self._n,)):
            raise ValueError(f"deleted: must be a bool array of length {self._n}")
        if self._ivf is None:
            return np.array([self._n - (int(deleted.sum()) if deleted is not None else 0)], np.int64)
        invlists = self._ivf.invlists
        sizes = np.array([invlists.list_size(i) for i in range(self.nlist)], np.int64)
        if deleted is None or not deleted.any():
            return sizes
        for i in np.flatnonzero(sizes).tolist():
            ids = invlists.get_ids(i)
            try:
                sizes[i] -= int(deleted[faiss.rev_swig_ptr(ids, int(sizes[i]))].sum())
            finally:
                invlists.release_ids(i, ids)
        return sizes

    # -- search -----------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               allowed: np.ndarray | None = None, deleted: np.ndarray | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows for each of ``queries`` (nq, d) float32, best first: positions
        (nq, k) int64 padded with -1 and exact distances (nq, k) float32 padded with +inf.

        ``allowed`` / ``deleted`` are bool masks of length n; rows not allowed or deleted are
        skipped inside faiss.  When a query finds fewer than ``min(k, allowed rows)``
        candidates (a selective filter), nprobe is widened x4 per round up to nlist; when
        the filter leaves no more rows than would be re-ranked, they are scored exactly.
        Raises DimensionMismatch, or ValueError on a bad k, nprobe or mask."""
        q = self._check_queries(queries)
        k = self._check_k(k)
        probe = self._params.nprobe if nprobe is None else nprobe
        if not _is_int(probe) or probe < 1:
            raise ValueError("nprobe: must be a positive integer")
        mask = self._mask(allowed, deleted)
        count = self._n if mask is None else int(np.count_nonzero(mask))
        nq = len(q)
        if nq == 0 or count == 0:
            return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)
        fetch = min(max(k * self._params.rerank, MIN_FETCH[self._params.quantizer]) if self._reranks else k, count)
        if mask is not None and count <= fetch:
            return self.exact(q, k, np.flatnonzero(mask))
        selector = None if mask is None else _SWIG.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
        nlist = self.nlist
        probe = min(int(probe), nlist)
        with OmpThreads(1 if nq == 1 else BATCH_THREADS):
            labels = self._candidates(q, fetch, probe, selector)
            widen(labels, min(k, count), probe, nlist,
                  lambda rows, wider: self._candidates(q[rows], fetch, wider, selector))
            return self._top_k(q, labels, k, shared=False)

    def scan(self, queries: np.ndarray, fetch: int, lists: np.ndarray, list_dist: np.ndarray,
             allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best ``fetch`` rows by their codes in the lists a shared :class:`Coarse` chose
        (``lists``, ``list_dist``: (nq, nprobe)), only rows set in ``allowed`` when given (a
        bitmap: ``np.packbits(mask, bitorder="little")``): the approximate scores (nq,
        fetch) as faiss gives them (inner product: higher is better; L2: lower) and
        positions, -1 where fewer were found. Only for a segment filled from that
        codebook; the caller re-ranks (:meth:`rerank`)."""
        ivf = self._ivf
        if ivf is None:
            raise ValueError("segment: an exhaustive segment has no lists to scan")
        return _scan(ivf, self._check_queries(queries), max(1, min(int(fetch), self._n)), lists, list_dist, allowed)

    def exact(self, queries: np.ndarray, k: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` among ``positions`` (any order; duplicates ignored) for each query,
        from the full-precision vectors; same return convention as :meth:`search`."""
        q = self._check_queries(queries)
        k = self._check_k(k)
        pos = self._check_positions(positions)
        with OmpThreads(1 if len(q) == 1 else BATCH_THREADS):
            return self._top_k(q, pos, k, shared=True)

    def exact_all(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` over every row (tombstones included: the caller drops them),
        by BLAS from the memory map on the calling thread's OpenMP threads; same return
        convention as :meth:`search`. For measuring recall, not for serving."""
        q = self._check_queries(queries)
        k = min(self._check_k(k), self._n)
        with OmpThreads(BATCH_THREADS):
            sims, labels = faiss.knn(q, self._rows(), k, metric=_faiss_metric(self._metric))
        dist = sims if self._metric == "l2" else np.float32(1.0) - sims
        return np.asarray(labels, np.int64), np.asarray(dist, np.float32)

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        """Full-precision rows at ``positions`` as a new (len, d) float32 array."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(pos) and (pos.min() < 0 or pos.max() >= self._n):
            raise ValueError(f"positions: must be in 0..{self._n - 1}")
        return np.array(self._rows()[pos], dtype=np.float32)

    # -- persistence ------------------------------------------------------------------

    def to_parts(self) -> dict[str, Any]:
        """The segment as plain data (no pickle): params, metric, n, dim, the serialised
        faiss index and the raw float32 vectors (C order)."""
        return {
            "params": self._params.to_dict(),
            "metric": self._metric,
            "n": self._n,
            "dim": self._dim,
            "codebook": self.codebook,
            "index": faiss.serialize_index(self._live_index()).tobytes(),
            "vectors": self._rows().tobytes(),
        }

    @classmethod
    def from_parts(cls, parts: dict[str, Any], path: Path) -> IvfSegment:
        """Restore :meth:`to_parts` output: writes the vectors to ``path`` and maps them.
        Raises ValueError naming the first inconsistent part."""
        params = IvfParams.from_dict(parts["params"])
        params.validate()
        metric, n, dim = parts["metric"], parts["n"], parts["dim"]
        if metric not in IVF_METRICS:
            raise ValueError(f"metric: must be one of {', '.join(IVF_METRICS)}")
        if not _is_int(n) or not _is_int(dim) or n < 1 or dim < 1:
            raise ValueError("n: n and dim must be positive integers")
        raw = parts["vectors"]
        if len(raw) != n * dim * 4:
            raise ValueError(f"vectors: {len(raw)} bytes, expected n * dim * 4 = {n * dim * 4}")
        blob = parts["index"]
        index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        if index.d != dim or index.ntotal != n or index.metric_type != _faiss_metric(metric):
            raise ValueError("index: dimension, row count or metric disagree with the parts")
        codebook = parts.get("codebook")
        if codebook is not None and not isinstance(codebook, str):
            raise ValueError("codebook: must be a codebook id or None")
        return cls(index, file_backed(Path(path), raw, np.float32, (n, dim)), Path(path), metric, params, len(blob),
                   codebook)

    def memory_bytes(self) -> int:
        """Bytes resident for the faiss index (codes, ids, centroids, quantiser tables),
        excluding the memory-mapped vectors; measured as its serialised size."""
        return self._index_bytes

    def close(self) -> None:
        """Drop the index and the memory map (the owner deletes the file). No search may
        be running; later calls raise ValueError."""
        self._vectors = None
        self._index = None
        self._ivf = None

    # -- private ----------------------------------------------------------------------

    def _rows(self) -> np.ndarray:
        if self._vectors is None:
            raise ValueError("segment: is closed")
        return self._vectors

    def _live_index(self) -> Any:
        if self._index is None:
            raise ValueError("segment: is closed")
        return self._index

    def _check_queries(self, queries: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self._dim:
            raise DimensionMismatch(f"query has {q.shape[-1] if q.ndim else 0} dimensions, segment has {self._dim}")
        return q

    @staticmethod
    def _check_k(k: int) -> int:
        if not _is_int(k) or k < 1:
            raise ValueError("k: must be a positive integer")
        return int(k)

    def _check_positions(self, positions: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(pos) > 1 and not (pos[1:] > pos[:-1]).all():
            pos = np.unique(pos)  # sorted also makes the reads from the memory map sequential
        if len(pos) and (pos[0] < 0 or pos[-1] >= self._n):
            raise ValueError(f"positions: must be in 0..{self._n - 1}")
        return pos

    def _mask(self, allowed: np.ndarray | None, deleted: np.ndarray | None) -> np.ndarray | None:
        mask = None
        for name, value in (("allowed", allowed), ("deleted", deleted)):
            if value is None:
                continue
            arr = np.asarray(value)
            if arr.dtype != np.bool_ or arr.shape != (self._n,):
                raise ValueError(f"{name}: must be a bool array of length {self._n}")
            arr = ~arr if name == "deleted" else arr
            mask = arr if mask is None else mask & arr
        return mask

    def _candidates(self, q: np.ndarray, fetch: int, nprobe: int, selector: Any) -> np.ndarray:
        index = self._live_index()
        params: Any = None
        if self._ivf is not None:
            params = _SWIG.SearchParametersIVF(sel=selector, nprobe=nprobe) if selector is not None \
                else _SWIG.SearchParametersIVF(nprobe=nprobe)
        elif selector is not None:
            params = _SWIG.SearchParameters(sel=selector)
        _, labels = index.search(q, fetch, params=params)
        return np.asarray(labels, dtype=np.int64)

    def _top_k(self, q: np.ndarray, ids: np.ndarray, k: int, shared: bool) -> tuple[np.ndarray, np.ndarray]:
        """Exact best ``k`` of ``ids`` for each query, scored by faiss straight from the memory
        map (SIMD, no gathered copy, no BLAS threads to wake).  ``ids`` is one list for all
        queries (``shared``) or one row per query; -1 entries may only trail a row."""
        nq, d = q.shape
        width = ids.shape[-1]
        out_pos = np.full((nq, k), -1, np.int64)
        out_dist = np.full((nq, k), np.inf, np.float32)
        take = min(k, width)
        if nq == 0 or take == 0:
            return out_pos, out_dist
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vals = np.empty((nq, take), np.float32)
        labels = np.empty((nq, take), np.int64)
        knn = _SWIG.knn_L2sqr_by_idx if self._metric == "l2" else _SWIG.knn_inner_products_by_idx
        # ld_ids is passed explicitly: faiss 1.15 reads a wrong stride for its default (-1).
        knn(faiss.swig_ptr(q), faiss.swig_ptr(self._rows()), faiss.swig_ptr(ids), d, nq, self._n,
            width, take, faiss.swig_ptr(vals), faiss.swig_ptr(labels), 0 if shared else width)
        found = labels >= 0
        out_pos[:, :take] = np.where(found, labels, -1)
        dist = vals if self._metric == "l2" else np.float32(1.0) - vals
        out_dist[:, :take] = np.where(found, dist, np.float32(np.inf))
        return out_pos, out_dist
