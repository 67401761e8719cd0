"""In-process engines: raw hnswlib (the reference) and an s5vec ``Collection``.

Both expose ``search(query, ef) -> labels`` so the same timing loop measures them, and
:func:`compare` alternates timed passes between engines at each ``ef`` so slow drifts of
the machine (other load, CPU frequency) hit every engine alike.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import hnswlib
import numpy as np

from s5vec.index import Collection, CollectionConfig, RawItem, prepare_batch, prepare_vectors

from .dataset import Dataset, recall_at_k
from .stats import latency_summary, rss_bytes

HNSW_M = 16
EF_CONSTRUCTION = 200
BUILD_THREADS = 2
K = 10


class Engine(Protocol):
    """What :func:`compare` needs from an engine."""

    name: str

    def prepare(self, ef: int) -> None: ...

    def search(self, query: np.ndarray, ef: int) -> Any: ...

    def labels(self, raw: Any) -> list[int]: ...


@dataclass(slots=True)
class HnswReference:
    """Raw hnswlib, space 'ip', M=16, ef_construction=200, built with 2 threads."""

    name: str = "hnswlib"
    index: hnswlib.Index | None = None
    build: dict[str, Any] = field(default_factory=dict)

    def build_from(self, base: np.ndarray) -> dict[str, Any]:
        """Build the graph from ``base`` (float32); returns build time and RSS growth."""
        gc.collect()
        rss0 = rss_bytes()
        start = time.perf_counter()
        index = hnswlib.Index(space="ip", dim=base.shape[1])
        index.init_index(max_elements=len(base), M=HNSW_M, ef_construction=EF_CONSTRUCTION, random_seed=100)
        index.add_items(base, np.arange(len(base)), num_threads=BUILD_THREADS)
        elapsed = time.perf_counter() - start
        rss1 = rss_bytes()
        self.index = index
        self.build = {
            "vectors": int(len(base)), "build_s": elapsed, "vectors_per_s": len(base) / elapsed,
            "M": HNSW_M, "ef_construction": EF_CONSTRUCTION, "threads": BUILD_THREADS,
            "rss_delta_bytes": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
        }
        return self.build

    def prepare(self, ef: int) -> None:
        assert self.index is not None
        self.index.set_ef(max(ef, K))

    def search(self, query: np.ndarray, ef: int) -> Any:
        return self.index.knn_query(query, k=K, num_threads=1)[0]  # type: ignore[union-attr]

    def labels(self, raw: Any) -> list[int]:
        return [int(x) for x in raw[0]]


@dataclass(slots=True)
class S5vecInProcess:
    """An s5vec ``Collection`` (metric cosine) filled through ``prepare_batch``/``apply_upsert``."""

    name: str = "s5vec"
    collection: Collection | None = None
    build: dict[str, Any] = field(default_factory=dict)
    _scratch: tempfile.TemporaryDirectory[str] | None = None

    def build_from(self, base: np.ndarray, chunk: int = 1000) -> dict[str, Any]:
        """Validate + apply in chunks, then drain pending vectors into the HNSW graph."""
        self._scratch = tempfile.TemporaryDirectory(prefix="s5vec-bench-")
        config = CollectionConfig(name="bench", dimension=base.shape[1], metric="cosine")
        gc.collect()
        rss0 = rss_bytes()
        start = time.perf_counter()
        coll = Collection(config, scratch_dir=Path(self._scratch.name))
        for lo in range(0, len(base), chunk):
            items = [RawItem(id=str(i), vector=base[i]) for i in range(lo, min(lo + chunk, len(base)))]
            batch, errors = prepare_batch(config, items)
            if errors:
                raise RuntimeError(f"prepare_batch rejected {len(errors)} items, first: {errors[0]}")
            coll.apply_upsert(batch)
        applied = time.perf_counter()
        while coll.drain(1024, BUILD_THREADS):
            pass
        done = time.perf_counter()
        gc.collect()
        rss1 = rss_bytes()
        if coll.pending or len(coll) != len(base):
            raise RuntimeError(f"collection not fully built: {coll.stats()}")
        self.collection = coll
        self.build = {
            "vectors": int(len(base)), "apply_s": applied - start, "index_s": done - applied,
            "build_s": done - start, "vectors_per_s": len(base) / (done - start),
            "drain_batch": 1024, "threads": BUILD_THREADS,
            "rss_delta_bytes": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
        }
        return self.build

    def normalise(self, queries: np.ndarray) -> np.ndarray:
        """Queries as the daemon would hand them to ``search`` (validated, unit length)."""
        assert self.collection is not None
        return prepare_vectors(self.collection.config, queries)

    def prepare(self, ef: int) -> None:
        pass

    def search(self, query: np.ndarray, ef: int) -> Any:
        return self.collection.search(query, k=K, ef=ef, include_metadata=False)  # type: ignore[union-attr]

    def labels(self, raw: Any) -> list[int]:
        return [int(hit.id) for hit in raw]

    def close(self) -> None:
        self.collection = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


def _timed_pass(search: Callable[[np.ndarray, int], Any], queries: np.ndarray, ef: int,
                keep: bool) -> tuple[list[float], float, list[Any]]:
    clock = time.perf_counter
    lat: list[float] = []
    kept: list[Any] = []
    start = clock()
    for q in queries:
        t = clock()
        raw = search(q, ef)
        lat.append(clock() - t)
        if keep:
            kept.append(raw)
    return lat, clock() - start, kept


def compare(engines: Sequence[tuple[Engine, np.ndarray]], gt: np.ndarray, efs: Sequence[int],
            min_time: float = 1.0, log: Callable[[str], None] = print) -> dict[str, list[dict[str, Any]]]:
    """Recall@10, single-thread QPS and p50/p99 latency per engine and ef.

    ``engines`` pairs each engine with the query matrix it gets (s5vec gets its
    normalised queries).  Per ef: one untimed warm-up pass per engine (its results give
    recall), then timed passes alternate between engines until each has at least
    ``min_time`` seconds of measurement.
    """
    out: dict[str, list[dict[str, Any]]] = {engine.name: [] for engine, _ in engines}
    for ef in efs:
        lat: dict[str, list[float]] = {engine.name: [] for engine, _ in engines}
        spent: dict[str, float] = {engine.name: 0.0 for engine, _ in engines}
        recall: dict[str, float] = {}
        for engine, queries in engines:
            engine.prepare(ef)
            _, _, kept = _timed_pass(engine.search, queries, ef, keep=True)
            recall[engine.name] = recall_at_k([engine.labels(r) for r in kept], gt, K)
        while min(spent.values()) < min_time:
            for engine, queries in engines:
                engine.prepare(ef)
                got, elapsed, _ = _timed_pass(engine.search, queries, ef, keep=False)
                lat[engine.name].extend(got)
                spent[engine.name] += elapsed
        for engine, _ in engines:
            row = {"ef": ef, f"recall@{K}": recall[engine.name],
                   **latency_summary(lat[engine.name], spent[engine.name])}
            out[engine.name].append(row)
            log(f"  {engine.name:8s} ef={ef:<4d} recall@{K}={row[f'recall@{K}']:.4f} "
                f"qps={row['qps']:8.0f} p50={row['p50_ms']:.3f}ms p99={row['p99_ms']:.3f}ms")
    return out


def run_in_process(ds: Dataset, efs: Sequence[int], min_time: float = 1.0,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build raw hnswlib and s5vec on ``ds.base``; compare them query by query at each ef."""
    ref = HnswReference()
    log(f"[reference] building raw hnswlib on {len(ds.base)} vectors ...")
    ref_build = ref.build_from(ds.base)
    log(f"  built in {ref_build['build_s']:.2f}s")
    s5 = S5vecInProcess()
    log(f"[in-process] building s5vec Collection on {len(ds.base)} vectors ...")
    s5_build = s5.build_from(ds.base)
    log(f"  built in {s5_build['build_s']:.2f}s (apply {s5_build['apply_s']:.2f}s + index {s5_build['index_s']:.2f}s)")
    try:
        log(f"[in-process] searching, {len(ds.queries)} queries, alternating engines, >= {min_time:.1f}s each per ef")
        rows = compare([(ref, ds.queries), (s5, s5.normalise(ds.queries))], ds.gt, efs, min_time, log)
    finally:
        s5.close()
        ref.index = None
        gc.collect()
    ratios = []
    for r_row, s_row in zip(rows["hnswlib"], rows["s5vec"]):
        ratios.append({
            "ef": r_row["ef"],
            "p50_ratio": s_row["p50_ms"] / r_row["p50_ms"],
            "mean_ratio": s_row["mean_ms"] / r_row["mean_ms"],
            "p99_ratio": s_row["p99_ms"] / r_row["p99_ms"],
            "qps_ratio": r_row["qps"] / s_row["qps"],
        })
    return {
        "hnswlib": {"build": ref_build, "search": rows["hnswlib"]},
        "s5vec_in_process": {"build": s5_build, "search": rows["s5vec"]},
        "latency_ratio_s5vec_over_hnswlib": ratios,
        "ratio_target": 1.3,
    }
