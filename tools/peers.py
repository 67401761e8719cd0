"""``s5vec bench --peers``: s5vec against what users would pick instead, in one run.

Engines (one adapter each, same interface — :class:`Adapter`): raw hnswlib and raw faiss
(the ceiling), s5vec in process, Chroma embedded (``PersistentClient``), LanceDB embedded,
Qdrant local mode (``qdrant-client``).  Every in-process engine runs in its own worker
subprocess so its memory is measured alone and a crash or a missing package becomes a
"not run: <reason>" row instead of ending the run.  Per engine: durable ingest (where the
engine offers durability), recall@10 / QPS / p50 / p99 over a sweep of its search knob
(ef, nprobes+refine), filtered search at 50 / 10 / 1 / 0.1 % selectivity with the engine's
native filter, RSS growth, on-disk bytes, and spawn → first result after a restart (a fresh
process opens the stored index and answers one query).

Over HTTP: the s5vec daemon (:mod:`.daemon_proc`) against ``chroma run``, both loaded by
the same load generator (its own process: asyncio + aiohttp, N concurrent clients, bodies
pre-encoded), at each ef.

Writes ``results.json``, ``results.md`` and PNG plots (:mod:`.plots`) to
``bench-results/peers-<timestamp>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from .dataset import default_data_dir, exact_topk, glove_vectors, load_dataset, recall_at_k
from .stats import latency_summary, machine_info, rss_bytes

K: Final = 10
HNSW_M: Final = 16
EF_CONSTRUCTION: Final = 200
BUILD_THREADS: Final = 2
EFS: Final = (10, 16, 32, 64, 128, 256)
QUICK_EFS: Final = (16, 64, 128)
LANCE_SWEEP: Final = ((8, 1), (16, 2), (32, 4), (64, 8), (128, 16))
QUICK_LANCE_SWEEP: Final = ((16, 2), (64, 8))
FILTER_EF: Final = 128
RECALL_TARGET: Final = 0.95
SEARCH_QUERIES: Final = 1000
QUICK_QUERIES: Final = 200
QUICK_LIMIT: Final = 20_000
SLOW_ENGINE_QUERIES: Final = 200  # brute-force engines (Qdrant local): fewer queries, same ground truth prefix
ENGINES: Final = ("hnswlib", "faiss", "s5vec", "chroma", "lancedb", "qdrant")
HTTP_ENGINES: Final = ("s5vec-http", "chroma-http")
WORKER_TIMEOUT_S: Final = 3600
INGEST_BATCH: Final = 1000
FILTER_QUERIES: Final = 200
QDRANT_INGEST_BUDGET_S: Final = 600.0
SLOW_FILTER_QUERIES: Final = 20  # Qdrant local mode evaluates the filter per point in Python

Log = Callable[[str], None]


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def dir_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def fsync_tree(path: Path) -> None:
    """fsync every file and directory under ``path`` (makes an engine's save durable)."""
    for p in sorted(Path(path).rglob("*")) + [Path(path)]:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- data
def prepare_data(name: str, work: Path, limit: int | None, queries: int, log: Log) -> dict[str, Any]:
    """Write base/queries/gt .npy files into ``work``; returns a description of the data."""
    t = time.perf_counter()
    if name == "minilm":
        ds = load_dataset(default_data_dir(), limit, queries)
        base, query, gt, source = ds.base, ds.queries, ds.gt[:, :K], ds.gt_source
        desc = f"minilm-100k (real all-MiniLM-L6-v2 embeddings, 384-d){'' if limit is None else f', first {limit}'}"
    elif name == "glove":
        base, query = glove_vectors(queries)
        if limit is not None:
            base = base[:limit]
        gt = exact_topk(base, query, K)
        source = "recomputed exactly (numpy float32)"
        desc = f"GloVe 6B 50d, {len(base)} words (L2-normalised), {len(query)} held-out words as queries"
    elif name.startswith("synthetic-"):
        from .hybrid import write_vectors
        scale = {"synthetic-1m": 1_000_000, "synthetic-10m": 10_000_000}[name] if limit is None else limit
        info = write_vectors(default_data_dir(), scale, work / "base.npy", seed=11)
        base = np.load(work / "base.npy", mmap_mode="r")
        ds = load_dataset(default_data_dir(), 1, queries)
        query = ds.queries
        gt = exact_topk(np.asarray(base), query, K)
        source = "recomputed exactly (numpy float32)"
        desc = f"SYNTHETIC {scale} x 384: {info['real']} real MiniLM rows + {info['derived']} derived ({info['derivation']})"
    else:
        raise ValueError(f"unknown dataset {name!r}")
    if not (work / "base.npy").exists():
        np.save(work / "base.npy", np.ascontiguousarray(base, dtype=np.float32))
    np.save(work / "queries.npy", np.ascontiguousarray(query, dtype=np.float32))
    np.save(work / "gt.npy", np.ascontiguousarray(gt, dtype=np.int32))
    n = len(base)
    log(f"data: {desc}: {n} x {base.shape[1]}, {len(query)} queries ({time.perf_counter() - t:.1f}s)")
    return {"name": name, "description": desc, "base_vectors": n, "dimension": int(base.shape[1]),
            "queries": len(query), "ground_truth": source}


def prepare_filters(work: Path, n: int, log: Log) -> list[dict[str, Any]]:
    """The synthetic catalogue's ``views`` column and one ``views >= X`` filter per target
    selectivity (tools/synthetic.py), with exact filtered ground truth."""
    from .synthetic import day_anchor, filter_cases, make_catalogue
    cat = make_catalogue(n, 1.0, day_anchor(time.time()), seed=7)
    np.save(work / "views.npy", cat.views)
    base = np.load(work / "base.npy", mmap_mode="r")
    queries = np.load(work / "queries.npy")
    cases = []
    for case in filter_cases(cat, kinds=("views",)):
        rows = np.flatnonzero(case.mask)
        sub = np.asarray(base[rows]) if len(rows) < n else np.asarray(base)
        truth = rows[exact_topk(sub, queries, K)] if len(rows) < n else exact_topk(sub, queries, K)
        name = f"gt_filter_{case.target:g}.npy"
        np.save(work / name, truth.astype(np.int32))
        cases.append({"target": case.target, "selectivity": case.selectivity, "matches": case.matches,
                      "threshold": int(case.spec["views"]["$gte"]), "gt": name})
        log(f"  filter views >= {cases[-1]['threshold']}: {case.matches} matches ({case.selectivity:.4%})")
    return cases


# ------------------------------------------------------------------------- adapters
class Adapter(Protocol):
    """One engine behind the interface every measurement uses.

    ``build`` stores everything (durably where the engine offers it) and returns extra
    facts; ``set_knob`` picks a point of the speed/recall trade-off; ``search`` is one
    query per call returning base row numbers; ``views_min`` filters on ``views >= X``
    with the engine's native filter. ``open`` reopens the stored index in a fresh process.
    """

    name: str
    knobs: Sequence[Any]
    filter_knob: Any
    settings: dict[str, Any]

    def build(self, base: np.ndarray, views: np.ndarray, path: Path) -> dict[str, Any]: ...

    def open(self, path: Path, dim: int) -> None: ...

    def set_knob(self, knob: Any) -> None: ...

    def search(self, q: np.ndarray, k: int, views_min: int | None = None) -> list[int]: ...


class HnswlibAdapter:
    name = "hnswlib"
    filter_knob = FILTER_EF

    def __init__(self, quick: bool) -> None:
        self.knobs = QUICK_EFS if quick else EFS
        self.settings = {"index": "HNSW", "space": "ip", "M": HNSW_M, "ef_construction": EF_CONSTRUCTION,
                         "build_threads": BUILD_THREADS, "search_threads": 1, "knob": "ef",
                         "filter": "knn_query(filter=callable) on a views array (Python callback per node)",
                         "durability": "save_index + fsync after the build"}
        self.index: Any = None
        self.views: np.ndarray | None = None
        self.errors = 0

    def build(self, base: np.ndarray, views: np.ndarray, path: Path) -> dict[str, Any]:
        import hnswlib
        index = hnswlib.Index(space="ip", dim=base.shape[1])
        index.init_index(max_elements=len(base), M=HNSW_M, ef_construction=EF_CONSTRUCTION, random_seed=100)
        index.add_items(base, np.arange(len(base)), num_threads=BUILD_THREADS)
        path.mkdir(parents=True, exist_ok=True)
        index.save_index(str(path / "index.bin"))
        np.save(path / "views.npy", views)
        fsync_tree(path)
        self.index, self.views = index, views
        return {}

    def open(self, path: Path, dim: int) -> None:
        import hnswlib
        self.index = hnswlib.Index(space="ip", dim=dim)
        self.index.load_index(str(path / "index.bin"))
        self.views = np.load(path / "views.npy")

    def set_knob(self, knob: Any) -> None:
        self.index.set_ef(max(int(knob), K))

    def search(self, q: np.ndarray, k: int, views_min: int | None = None) -> list[int]:
        if views_min is None:
            labels, _ = self.index.knn_query(q, k=k, num_threads=1)
        else:
            views = self.views
            assert views is not None
            try:
                labels, _ = self.index.knn_query(q, k=k, num_threads=1, filter=lambda i: bool(views[i] >= views_min))
            except RuntimeError:  # fewer than k matches reached within ef: hnswlib returns nothing
                self.errors += 1
                return []
        return [int(x) for x in labels[0]]


class FaissAdapter:
    name = "faiss"
    filter_knob = FILTER_EF

    def __init__(self, quick: bool) -> None:
        self.knobs = QUICK_EFS if quick else EFS
        self.settings = {"index": "IndexHNSWFlat", "metric": "inner product", "M": HNSW_M,
                         "ef_construction": EF_CONSTRUCTION, "omp_threads_build": BUILD_THREADS,
                         "omp_threads_search": 1, "knob": "efSearch",
                         "filter": "SearchParametersHNSW(sel=IDSelectorBitmap) (native, pre-filter in the graph walk)",
                         "durability": "write_index + fsync after the build"}
        self.index: Any = None
        self.views: np.ndarray | None = None
        self.ef = 64
        self._selectors: dict[int, Any] = {}

    def build(self, base: np.ndarray, views: np.ndarray, path: Path) -> dict[str, Any]:
        import faiss
        faiss.omp_set_num_threads(BUILD_THREADS)
        index = faiss.IndexHNSWFlat(base.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(base)
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(path / "index.faiss"))
        np.save(path / "views.npy", views)
        fsync_tree(path)
        faiss.omp_set_num_threads(1)
        self.index, self.views = index, views
        return {}

    def open(self, path: Path, dim: int) -> None:
        import faiss
        faiss.omp_set_num_threads(1)
        self.index = faiss.read_index(str(path / "index.faiss"))
        self.views = np.load(path / "views.npy")

    def set_knob(self, knob: Any) -> None:
        self.ef = max(int(knob), K)

    def _selector(self, views_min: int) -> Any:
        import faiss
        if views_min not in self._selectors:
            assert self.views is not None
            bits = np.packbits(self.views >= views_min, bitorder="little")
            self._selectors[views_min] = (faiss.IDSelectorBitmap(len(self.views), faiss.swig_ptr(bits)), bits)
        return self._selectors[views_min][0]

    def search(self, q: np.ndarray, k: int, views_min: int | None = None) -> list[int]:
        import faiss
        params = faiss.SearchParametersHNSW(efSearch=self.ef)
        if views_min is not None:
            params.sel = self._selector(views_min)
        _, labels = self.index.search(q[None, :], k, params=params)
        return [int(x) for x in labels[0] if x >= 0]


class S5vecAdapter:
    name = "s5vec"
    filter_knob = FILTER_EF

    def __init__(self, quick: bool) -> None:
        self.knobs = QUICK_EFS if quick else EFS
        self.settings = {"index": "s5vec Collection (recent tier: hnswlib HNSW)", "metric": "cosine",
                         "M": HNSW_M, "ef_construction": EF_CONSTRUCTION, "build_threads": BUILD_THREADS,
                         "search_threads": 1, "knob": "ef",
                         "filter": "{'views': {'$gte': X}} through the payload index (numeric column)",
                         "durability": "in-process Collection has none; durable ingest, disk and restart "
                                       "are measured on the daemon (s5vec-http)"}
        self.coll: Any = None
        self.ef = 64

    def build(self, base: np.ndarray, views: np.ndarray, path: Path) -> dict[str, Any]:
        from s5vec.index import Collection, CollectionConfig, RawItem, prepare_batch
        (path / "scratch").mkdir(parents=True, exist_ok=True)  # graph scratch files; the caller removes path
        config = CollectionConfig(name="bench", dimension=base.shape[1], metric="cosine",
                                  payload=(("views", "number"),))
        coll = Collection(config, scratch_dir=path / "scratch")
        for lo in range(0, len(base), INGEST_BATCH):
            hi = min(lo + INGEST_BATCH, len(base))
            items = [RawItem(str(i), base[i], {"views": int(views[i])}) for i in range(lo, hi)]
            batch, errors = prepare_batch(config, items)
            if errors:
                raise RuntimeError(f"prepare_batch rejected {len(errors)} items, first: {errors[0]}")
            coll.apply_upsert(batch)
        while coll.drain(1024, BUILD_THREADS):
            pass
        self.coll = coll
        return {"durable": False}

    def open(self, path: Path, dim: int) -> None:
        raise NotImplementedError("the in-process Collection is not persisted; see s5vec-http")

    def set_knob(self, knob: Any) -> None:
        self.ef = int(knob)

    def search(self, q: np.ndarray, k: int, views_min: int | None = None) -> list[int]:
        spec = None if views_min is None else {"views": {"$gte": views_min}}
        return [int(h.id) for h in self.coll.search(q, k=k, ef=self.ef, filter=spec, include_metadata=False)]


class ChromaAdapter:
    name = "chroma"
    filter_knob = FILTER_EF

    def __init__(self, quick: bool) -> None:
        self.knobs = QUICK_EFS if quick else EFS
        self.settings = {"client": "chromadb.PersistentClient (embedded, Rust core, SQLite WAL)",
                         "index": "HNSW", "space": "ip", "max_neighbors (M)": HNSW_M,
                         "ef_construction": EF_CONSTRUCTION, "knob": "ef_search (collection.modify)",
                         "filter": "where={'views': {'$gte': X}} (metadata pre-filter)",
                         "durability": "add() returns after the write-ahead log commit (SQLite)"}
        self.client: Any = None
        self.coll: Any = None

    def _config(self, ef: int) -> dict[str, Any]:
        return {"hnsw": {"space": "ip", "max_neighbors": HNSW_M, "ef_construction": EF_CONSTRUCTION,
                         "ef_search": ef}}

    def build(self, base: np.ndarray, views: np.ndarray, path: Path) -> dict[str, Any]:
        import chromadb
        from chromadb.config import Settings
        self.client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
        self.coll = self.client.create_collection("bench", configuration=self._config(64), embedding_function=None)
        batch = min(INGEST_BATCH * 5, self.client.get_max_batch_size())
        for lo in range(0, len(base), batch):
            hi = min(lo + batch, len(base))
            self.coll.add(ids=[str(i) for i in range(lo, hi)], embeddings=base[lo:hi],
                          metadatas=[{"views": int(v)} for v in views[lo:hi]])
        return {"batch": batch}

    def open(self, path: Path, dim: int) -> None:
        import chromadb
        from chromadb.config import Settings
        self.client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
        self.coll = self.client.get_collection("bench", embedding_function=None)

    def set_knob(self, knob: Any) -> None:
        # The loaded index keeps the ef_search it was opened with: persist the new value,
        # drop the client's cached system and reopen (the first query reloads the index).
        import chromadb
        from chromadb.api.client import SharedSystemClient
        from chromadb.config import Settings
        if self.coll.configuration_json.get("hnsw", {}).get("ef_search") == int(knob):
            return
        self.coll.modify(configuration={"hnsw": {"ef_search": int(knob)}})
        path = self.client.get_settings().persist_directory
        self.coll = self.client = None
        SharedSystemClient.clear_system_cache()
        gc.collect()
        self.client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
        self.coll = self.client.get_collection("bench", embedding_function=None)

    def search(self, q: np.ndarray, k: int, views_min: int | None = None) -> list[int]:
        where = None if views_min is None else {"views": {"$gte": views_min}}
        res = self.coll.query(query_embeddings=q[None, :], n_results=k, where=where, include=[])
        return [int(x) for x in res["ids"][0]]


class LanceAdapter:
    name = "lancedb"
    filter_knob = (64, 8)

    def __init__(self, quick: bool) -> None:
        self.knobs = QUICK_LANCE_SWEEP if quick else LANCE_SWEEP
        self.settings = {"client": "lancedb.connect(path) (embedded, Lance files)", "index": "IVF_PQ",
                         "distance": "dot", "num_partitions": "~sqrt(n)", "num_sub_vectors": "dim/8 (dim/5 for 50-d)",
                         "knob": "(nprobes, refine_factor)",
                         "filter": "where('views >= X', prefilter=True)",
                         "durability": "table.add writes Lance data files + manifest (no fsync: not durable "
                                       "against power loss); index built after ingest and counted"}
        self.table: Any = None
        self.knob: tuple[int, int] = (16, 2)

    def build(self, base: np.ndarray, views: np.ndarray, path: Path) -> dict[str, Any]:
        import lancedb
        import pyarrow as pa
        db = lancedb.connect(str(path))
        dim = base.shape[1]

        def chunk(lo: int, hi: int) -> pa.Table:
            flat = pa.array(base[lo:hi].reshape(-1), pa.float32())
            return pa.table({"id": pa.array(np.arange(lo, hi), pa.int64()),
                             "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
                             "views": pa.array(views[lo:hi], pa.int64())})
        batch = INGEST_BATCH * 10
        table = db.create_table("bench", chunk(0, min(batch, len(base))))
        for lo in range(batch, len(base), batch):
            table.add(chunk(lo, min(lo + batch, len(base))))
        ingested = time.perf_counter()
        parts = max(16, int(math.sqrt(len(base))))
        subs = dim // 8 if dim % 8 == 0 else (dim // 5 if dim % 5 == 0 else dim // 2)
        table.create_index(metric="dot", vector_column_name="vector", num_partitions=parts, num_sub_vectors=subs,
                           index_type="IVF_PQ")
        fsync_tree(path)
        self.table = table
        return {"num_partitions": parts, "num_sub_vectors": subs, "index_build_s": time.perf_counter() - ingested}

    def open(self, path: Path, dim: int) -> None:
        import lancedb
        self.table = lancedb.connect(str(path)).open_table("bench")

    def set_knob(self, knob: Any) -> None:
        self.knob = (int(knob[0]), int(knob[1]))

    def search(self, q: np.ndarray, k: int, views_min: int | None = None) -> list[int]:
        query = (self.table.search(q, vector_column_name="vector").distance_type("dot")
                 .nprobes(self.knob[0]).refine_factor(self.knob[1]).limit(k).select(["id"]))
        if views_min is not None:
            query = query.where(f"views >= {int(views_min)}", prefilter=True)
        return [int(x) for x in query.to_arrow().column("id").to_pylist()]


class QdrantAdapter:
    name = "qdrant"
    knobs: Sequence[Any] = ("exact",)
    filter_knob = "exact"

    def __init__(self, quick: bool) -> None:
        self.settings = {"client": "qdrant_client.QdrantClient(path=...) (local mode, pure Python/numpy)",
                         "index": "none: local mode scans every vector (no HNSW)", "distance": "Dot",
                         "knob": "none (exact)", "filter": "Filter(must=[FieldCondition('views', Range(gte=X))])",
                         "durability": "points persisted to the local SQLite store on upsert",
                         "queries": f"first {SLOW_ENGINE_QUERIES}, filtered first {SLOW_FILTER_QUERIES} "
                                    "(brute force is slow)"}
        self.client: Any = None

    def build(self, base: np.ndarray, views: np.ndarray, path: Path) -> dict[str, Any]:
        from qdrant_client import QdrantClient, models
        self.client = QdrantClient(path=str(path))
        self.client.create_collection("bench", vectors_config=models.VectorParams(size=base.shape[1],
                                                                                  distance=models.Distance.DOT))
        batch = INGEST_BATCH
        start = time.perf_counter()
        for lo in range(0, len(base), batch):
            hi = min(lo + batch, len(base))
            spent = time.perf_counter() - start
            if lo and spent * len(base) / lo > QDRANT_INGEST_BUDGET_S:
                raise RuntimeError(f"local-mode ingest ran at {lo / spent:.0f} vectors/s over the first {lo} "
                                   f"vectors: all {len(base)} would take ~{spent * len(base) / lo / 60:.0f} min "
                                   f"(budget {QDRANT_INGEST_BUDGET_S / 60:.0f} min)")
            self.client.upsert("bench", points=models.Batch(ids=list(range(lo, hi)), vectors=base[lo:hi].tolist(),
                                                            payloads=[{"views": int(v)} for v in views[lo:hi]]))
        return {"batch": batch}

    def open(self, path: Path, dim: int) -> None:
        from qdrant_client import QdrantClient
        self.client = QdrantClient(path=str(path))

    def set_knob(self, knob: Any) -> None:
        pass

    def search(self, q: np.ndarray, k: int, views_min: int | None = None) -> list[int]:
        from qdrant_client import models
        flt = None if views_min is None else models.Filter(
            must=[models.FieldCondition(key="views", range=models.Range(gte=views_min))])
        res = self.client.query_points("bench", query=q.tolist(), limit=k, query_filter=flt, with_payload=False)
        return [int(p.id) for p in res.points]


ADAPTERS: Final[dict[str, Callable[[bool], Any]]] = {
    "hnswlib": HnswlibAdapter, "faiss": FaissAdapter, "s5vec": S5vecAdapter,
    "chroma": ChromaAdapter, "lancedb": LanceAdapter, "qdrant": QdrantAdapter,
}
DISTRIBUTIONS: Final = {"hnswlib": "chroma-hnswlib", "faiss": "faiss-cpu", "s5vec": "s5vec", "chroma": "chromadb",
                        "lancedb": "lancedb", "qdrant": "qdrant-client"}


DURABLE: Final = {"hnswlib": "save_index + fsync", "faiss": "write_index + fsync", "s5vec": "none (in process; see s5vec-http)",
                  "chroma": "SQLite log commit", "lancedb": "files written, no fsync", "qdrant": "local SQLite store",
                  "s5vec-http": "WAL fsync per acked batch", "chroma-http": "SQLite log commit"}


def available(engine: str) -> str | None:
    """None if ``engine``'s package imports here, else the reason it cannot run."""
    module = {"hnswlib": "hnswlib", "faiss": "faiss", "s5vec": "s5vec.index", "chroma": "chromadb",
              "lancedb": "lancedb", "qdrant": "qdrant_client"}[engine]
    import importlib.util
    try:
        if importlib.util.find_spec(module) is None:
            return f"not installed ({DISTRIBUTIONS[engine]}; pip install -e './tools[peers]')"
    except (ImportError, ValueError) as exc:
        return f"not importable: {exc}"
    return None


# ---------------------------------------------------------------------- measurement
def _knob_label(knob: Any) -> str:
    return "x".join(str(x) for x in knob) if isinstance(knob, tuple) else str(knob)


def measure(adapter: Any, queries: np.ndarray, gt: np.ndarray, knob: Any, views_min: int | None = None,
            min_time: float = 1.0, warmup: int = 10) -> dict[str, Any]:
    """One query per call, single thread: a pass for recall, then timed passes for at least
    ``min_time`` seconds; recall@10 against ``gt`` plus the latency summary."""
    adapter.set_knob(knob)
    errors0 = getattr(adapter, "errors", 0)
    for q in queries[:warmup]:
        adapter.search(q, K, views_min)
    found = []
    lat: list[float] = []
    clock = time.perf_counter
    spent = 0.0
    for q in queries:
        t = clock()
        found.append(adapter.search(q, K, views_min))
        lat.append(clock() - t)
    spent += sum(lat)
    while spent < min_time:
        for q in queries:
            t = clock()
            adapter.search(q, K, views_min)
            dt = clock() - t
            lat.append(dt)
            spent += dt
    kk = min(K, gt.shape[1])
    return {"knob": _knob_label(knob), "recall@10": recall_at_k(found, gt, kk), **latency_summary(lat, spent),
            "errors": getattr(adapter, "errors", 0) - errors0}


def run_worker(engine: str, work: Path, quick: bool, min_time: float, out: Path) -> int:
    """Build one engine on the prepared data, measure it, write JSON to ``out``."""
    adapter = ADAPTERS[engine](quick)
    base = np.load(work / "base.npy", mmap_mode="r")
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.load(work / "queries.npy")
    gt = np.load(work / "gt.npy")
    views = np.load(work / "views.npy")
    filters = json.loads((work / "filters.json").read_text())
    if engine == "qdrant":
        queries, gt = queries[:SLOW_ENGINE_QUERIES], gt[:SLOW_ENGINE_QUERIES]
    store = work / "store" / engine
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    result: dict[str, Any] = {"engine": engine, "settings": adapter.settings, "queries": len(queries)}
    gc.collect()
    rss0 = rss_bytes()
    t = time.perf_counter()
    extra = adapter.build(base, views, store)
    build_s = time.perf_counter() - t
    gc.collect()
    rss1 = rss_bytes()
    result["ingest"] = {"vectors": len(base), "seconds": build_s, "vectors_per_s": len(base) / build_s, **extra}
    result["rss_delta_bytes"] = (rss1 - rss0) if rss0 is not None and rss1 is not None else None
    result["rss_per_million_bytes"] = result["rss_delta_bytes"] * 1e6 / len(base) if result["rss_delta_bytes"] else None
    if engine != "s5vec":
        result["disk_bytes"] = dir_bytes(store)
        result["disk_bytes_per_vector"] = result["disk_bytes"] / len(base)
    _log(f"[{engine}] built {len(base)} in {build_s:.1f}s, RSS +{(result['rss_delta_bytes'] or 0) / 2**20:.0f} MiB")
    del base
    result["search"] = []
    for knob in adapter.knobs:
        row = measure(adapter, queries, gt, knob, min_time=min_time)
        result["search"].append(row)
        _log(f"  {engine:8s} {row['knob']:>6s} recall@10={row['recall@10']:.4f} qps={row['qps']:7.0f} "
             f"p50={row['p50_ms']:.3f}ms p99={row['p99_ms']:.3f}ms")
    result["filtered"] = []
    for case in filters:
        fq = queries[:SLOW_FILTER_QUERIES if engine == "qdrant" else FILTER_QUERIES]
        fgt = np.load(work / case["gt"])[: len(fq)]
        row = measure(adapter, fq, fgt, adapter.filter_knob, views_min=case["threshold"],
                      min_time=min_time / 2)
        row.update({"target": case["target"], "selectivity": case["selectivity"]})
        result["filtered"].append(row)
        _log(f"  {engine:8s} filter {case['target']:>6.1%} recall@10={row['recall@10']:.4f} qps={row['qps']:7.0f} "
             f"p99={row['p99_ms']:.2f}ms")
    result["rss_after_search_bytes"] = rss_bytes()
    out.write_text(json.dumps(result))
    return 0


def run_first_query(engine: str, work: Path) -> int:
    """Open the stored index in this (fresh) process and answer one query; prints the ids."""
    adapter = ADAPTERS[engine](False)
    queries = np.load(work / "queries.npy", mmap_mode="r")
    adapter.open(work / "store" / engine, int(queries.shape[1]))
    adapter.set_knob(adapter.knobs[len(adapter.knobs) // 2])
    print(json.dumps(adapter.search(np.ascontiguousarray(queries[0], dtype=np.float32), K)))
    return 0


def _subprocess(args: list[str], timeout: float) -> tuple[int, str, float]:
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "s5vec_tools.peers", *args], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f}s", time.perf_counter() - t
    elapsed = time.perf_counter() - t
    for line in proc.stderr.splitlines():
        if line.startswith(("[", "  ")):
            _log(line)
    text = proc.stdout if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return proc.returncode, text, elapsed


def run_engine(engine: str, work: Path, quick: bool, min_time: float) -> dict[str, Any]:
    """Worker subprocess for the measurements, then a fresh one for time to first query."""
    reason = available(engine)
    if reason:
        return {"engine": engine, "not_run": reason}
    out = work / f"{engine}.json"
    code, text, _ = _subprocess(["_worker", engine, "--work", str(work), "--min-time", str(min_time)]
                                + (["--quick"] if quick else []), WORKER_TIMEOUT_S)
    if code != 0:
        return {"engine": engine, "not_run": f"failed: {text}"}
    result: dict[str, Any] = json.loads(out.read_text())
    if engine != "s5vec":
        code, text, elapsed = _subprocess(["_first_query", engine, "--work", str(work)], 600)
        result["restart"] = ({"spawn_to_first_result_s": elapsed, "includes": "python start + imports + open + 1 query"}
                             if code == 0 else {"failed": text})
    shutil.rmtree(work / "store" / engine, ignore_errors=True)
    return result


# ----------------------------------------------------------------------------- HTTP
def _chroma_ingest(url: str, base: np.ndarray, batch: int) -> tuple[str, dict[str, Any]]:
    import chromadb
    from chromadb.config import Settings
    host, port = url.rsplit("//", 1)[1].split(":")
    client = chromadb.HttpClient(host=host, port=int(port), settings=Settings(anonymized_telemetry=False))
    coll = client.create_collection("bench", embedding_function=None, configuration={
        "hnsw": {"space": "ip", "max_neighbors": HNSW_M, "ef_construction": EF_CONSTRUCTION, "ef_search": 64}})
    t = time.perf_counter()
    for lo in range(0, len(base), batch):
        coll.add(ids=[str(i) for i in range(lo, min(lo + batch, len(base)))], embeddings=base[lo:lo + batch])
    elapsed = time.perf_counter() - t
    # Chroma acknowledges after its log write and indexes in the background: wait until a
    # query sees every record (count() reads the log, so probe with a search).
    return str(coll.id), {"vectors": len(base), "seconds": elapsed, "vectors_per_s": len(base) / elapsed,
                          "batch": batch, "client": "chromadb.HttpClient, sequential batches"}


def _chroma_set_ef(url: str, ef: int) -> None:
    import chromadb
    from chromadb.config import Settings
    host, port = url.rsplit("//", 1)[1].split(":")
    client = chromadb.HttpClient(host=host, port=int(port), settings=Settings(anonymized_telemetry=False))
    client.get_collection("bench", embedding_function=None).modify(configuration={"hnsw": {"ef_search": ef}})


async def _load(endpoint: str, bodies: list[bytes], parse: Callable[[bytes], list[int]], clients: int,
                min_time: float) -> dict[str, Any]:
    """``clients`` keep-alive connections, one request at a time each (:class:`.rawhttp.LoadPool`,
    the same client for every server)."""
    from .rawhttp import LoadPool
    async with LoadPool(endpoint, bodies, clients) as pool:
        await pool.warm(min(100, len(bodies)))
        run = await pool.run(min_time)
    ids = [parse(p) if p is not None else [] for p in run.first]
    return {"ids": ids, "errors": run.errors[:5], **latency_summary(run.latencies, run.elapsed)}


def run_load(args: argparse.Namespace) -> int:
    """Load-generator process: ``--kind s5vec|chroma`` against ``--endpoint``."""
    import msgspec
    queries = np.load(Path(args.work) / "queries.npy")
    gt = np.load(Path(args.work) / "gt.npy")
    enc = msgspec.json.Encoder()
    if args.kind == "s5vec":
        bodies = [enc.encode({"vector": q, "k": K, "options": {"include_metadata": False, "hnsw_ef": args.ef}})
                  for q in queries.tolist()]

        def parse(p: bytes) -> list[int]:
            return [int(r["id"]) for r in msgspec.json.decode(p)["results"]]
    else:
        bodies = [enc.encode({"query_embeddings": [q], "n_results": K, "include": []}) for q in queries.tolist()]

        def parse(p: bytes) -> list[int]:
            return [int(x) for x in msgspec.json.decode(p)["ids"][0]]
    try:
        import uvloop
        row = uvloop.run(_load(args.endpoint, bodies, parse, args.clients, args.min_time))
    except ImportError:  # pragma: no cover
        row = asyncio.run(_load(args.endpoint, bodies, parse, args.clients, args.min_time))
    row["recall@10"] = recall_at_k(row.pop("ids"), gt, K)
    Path(args.out).write_text(json.dumps(row))
    return 0


HTTP_REPEATS: Final = 3
"""Load runs per HTTP sweep point; the run with the median QPS is reported and every run's
QPS is kept (``qps_runs``).  Single 2 s runs of the same daemon spread from 1,260 to 2,180
QPS at ef 64 on this 2-core VM, so one run per point decided a ratio by luck."""


def _http_sweep(kind: str, endpoint: str, work: Path, efs: Sequence[int], clients: int, min_time: float,
                pid: int | None, set_ef: Callable[[int], None] | None = None,
                repeats: int = HTTP_REPEATS) -> list[dict[str, Any]]:
    from .stats import cpu_seconds
    rows = []
    for ef in efs:
        if set_ef is not None:
            set_ef(ef)
        runs: list[dict[str, Any]] = []
        failed = None
        for attempt in range(repeats):
            out = work / f"load-{kind}-{ef}-{attempt}.json"
            cpu0 = cpu_seconds(pid)
            code, text, _ = _subprocess(["_load", "--kind", kind, "--endpoint", endpoint, "--work", str(work),
                                         "--ef", str(ef), "--clients", str(clients), "--min-time", str(min_time),
                                         "--out", str(out)], 900)
            cpu1 = cpu_seconds(pid)
            if code != 0:
                failed = text
                break
            run = json.loads(out.read_text())
            run["server_cpu_s"] = (cpu1 - cpu0) if cpu0 and cpu1 else None
            runs.append(run)
        if failed is not None:
            rows.append({"knob": str(ef), "failed": failed})
            continue
        row = sorted(runs, key=lambda r: r["qps"])[len(runs) // 2]
        row.update({"knob": str(ef), "clients": clients, "qps_runs": [round(r["qps"], 1) for r in runs]})
        rows.append(row)
        _log(f"  {kind + '-http':12s} ef={ef:<4d} clients={clients} recall@10={row['recall@10']:.4f} "
             f"qps={row['qps']:7.0f} (runs {', '.join(f'{q:.0f}' for q in row['qps_runs'])}) "
             f"p50={row['p50_ms']:.2f}ms p99={row['p99_ms']:.2f}ms"
             + (f" errors={row['errors'][:1]}" if row["errors"] else ""))
    return rows


def run_s5vec_http(work: Path, data: dict[str, Any], efs: Sequence[int], clients: int, min_time: float) -> dict[str, Any]:
    """The daemon: durable ingest over HTTP, search sweep, RSS, disk, restart to first search."""
    from s5vec.client import Client

    from .daemon_proc import Daemon
    from .http_bench import _load_subprocess, _restart, _wait_indexed
    from .dataset import Dataset
    res: dict[str, Any] = {"engine": "s5vec-http", "notes": [],
                           "settings": {"server": "s5vec serve (aiohttp + uvloop), query cache off", "metric": "cosine",
                                        "M": HNSW_M, "ef_construction": EF_CONSTRUCTION, "knob": "hnsw_ef per request",
                                        "durability": "batch acknowledged after the WAL fsync",
                                        "ingest": "batches of 1000, 4 requests in flight (tools/http_load.py)"}}
    base = np.load(work / "base.npy", mmap_mode="r")
    n = len(base)
    # http_load reads the data set from a directory of f16 files: write one for this data.
    ddir = work / "f16"
    ddir.mkdir(exist_ok=True)
    np.save(ddir / "base.f16.npy", np.asarray(base).astype(np.float16))
    np.save(ddir / "queries.f16.npy", np.load(work / "queries.npy").astype(np.float16))
    daemon = Daemon(work / "s5vec-data", work / "s5vec-daemon.log")
    control = Client(daemon.url, timeout=600.0)
    try:
        daemon.start()
        daemon.wait_status("/health", timeout=60.0)
        control.create_collection("bench", data["dimension"], "cosine")
        rss0 = rss_bytes(daemon.pid)
        ingest = _load_subprocess("ingest", ["--url", daemon.url, "--collection", "bench", "--data", str(ddir),
                                             "--limit", str(n), "--batch", "1000", "--concurrency", "4"],
                                  work / "s5vec-ingest.json", _log)
        end = float(ingest.pop("end_monotonic"))
        indexed_at, _ = _wait_indexed(control, n, 3600.0)
        ingest["ingest_end_to_indexed_s"] = indexed_at - end
        ingest["seconds"] = ingest["elapsed_s"]
        res["ingest"] = ingest
        rss1 = rss_bytes(daemon.pid)
        res["rss_delta_bytes"] = (rss1 - rss0) if rss0 and rss1 else None
        res["rss_per_million_bytes"] = res["rss_delta_bytes"] * 1e6 / n if res["rss_delta_bytes"] else None
        _log(f"[s5vec-http] ingested {n} at {ingest['vectors_per_s']:.0f}/s (durable), indexed "
             f"{ingest['ingest_end_to_indexed_s']:.1f}s later; RSS +{(res['rss_delta_bytes'] or 0) / 2**20:.0f} MiB")
        res["search"] = _http_sweep("s5vec", f"{daemon.url}/api/v1/collections/bench/search", work, efs, clients,
                                    min_time, daemon.pid)
        ds = Dataset(ddir, np.zeros((0, data["dimension"]), np.float32), np.load(work / "queries.npy"),
                     np.load(work / "gt.npy"), "")
        ds.base = np.empty((n, 0), np.float32)  # _restart only checks len(base) against the count
        restart = _restart(daemon, control, ds, efs, res["notes"], _log)
        res["restart"] = {"spawn_to_first_result_s": restart["spawn_to_first_search_s"],
                          "includes": "daemon spawn + load + 1 search over HTTP", "detail": restart}
        res["disk_bytes"] = restart["data_dir_bytes"]
        res["disk_bytes_per_vector"] = res["disk_bytes"] / n
    finally:
        control.close()
        daemon.kill()
    return res


class ChromaServer:
    """``chroma run`` on 127.0.0.1 with its own data path and log."""

    def __init__(self, path: Path, log_path: Path) -> None:
        from .daemon_proc import free_port
        self.path, self.log_path = path, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        exe = Path(sys.executable).parent / "chroma"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        spawned = time.perf_counter()
        self.proc = subprocess.Popen([str(exe), "run", "--path", str(self.path), "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
        log.close()
        import urllib.request
        deadline = time.perf_counter() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2).read()
                return spawned
            except OSError:
                if self.proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"chroma run did not start (see {self.log_path})") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_chroma_http(work: Path, data: dict[str, Any], efs: Sequence[int], clients: int, min_time: float) -> dict[str, Any]:
    """``chroma run`` as a subprocess: ingest with HttpClient, the same load generator.

    The server keeps a loaded index's ef_search, so each sweep point persists the new
    ef_search and restarts the server (the first restart is timed: spawn → first result)."""
    reason = available("chroma")
    if reason:
        return {"engine": "chroma-http", "not_run": reason}
    if not (Path(sys.executable).parent / "chroma").exists():
        return {"engine": "chroma-http", "not_run": "no chroma CLI next to the interpreter"}
    server = ChromaServer(work / "chroma-server", work / "chroma-server.log")
    res: dict[str, Any] = {"engine": "chroma-http", "settings": {
        "server": f"chroma run (chromadb {_version('chromadb')}, Rust server)", "space": "ip",
        "max_neighbors (M)": HNSW_M, "ef_construction": EF_CONSTRUCTION,
        "knob": "ef_search (collection.modify + server restart: a loaded index keeps its ef)",
        "durability": "add acknowledged after the write-ahead log commit (SQLite)",
        "ingest": f"chromadb.HttpClient.add, batches of {INGEST_BATCH}, one request at a time"}}
    try:
        server.start()
        rss0 = rss_bytes(server.pid)
        base = np.load(work / "base.npy")
        cid, ingest = _chroma_ingest(server.url, base, INGEST_BATCH)
        n = len(base)
        del base
        t = time.perf_counter()
        _chroma_wait_indexed(server.url, n)
        ingest["ingest_end_to_indexed_s"] = time.perf_counter() - t
        res["ingest"] = ingest
        rss1 = rss_bytes(server.pid)
        res["rss_delta_bytes"] = (rss1 - rss0) if rss0 and rss1 else None
        res["rss_per_million_bytes"] = res["rss_delta_bytes"] * 1e6 / n if res["rss_delta_bytes"] else None
        _log(f"[chroma-http] ingested {n} at {ingest['vectors_per_s']:.0f}/s; RSS +{(res['rss_delta_bytes'] or 0) / 2**20:.0f} MiB")
        endpoint_path = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{cid}/query"
        query = np.load(work / "queries.npy")[0]

        def set_ef(ef: int) -> None:
            _chroma_set_ef(server.url, ef)
            server.stop()
            spawned = server.start()
            import urllib.request
            body = json.dumps({"query_embeddings": [query.tolist()], "n_results": K, "include": []}).encode()
            req = urllib.request.Request(server.url + endpoint_path, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=600).read()
            if "restart" not in res:
                res["restart"] = {"spawn_to_first_result_s": time.perf_counter() - spawned,
                                  "includes": "server spawn + load + 1 query over HTTP"}
                res["rss_after_restart_first_query_bytes"] = rss_bytes(server.pid)

        res["search"] = _http_sweep("chroma", server.url + endpoint_path, work, efs, clients, min_time, None,
                                    set_ef=set_ef)
        res["disk_bytes"] = dir_bytes(server.path)
        res["disk_bytes_per_vector"] = res["disk_bytes"] / n
    finally:
        server.stop()
    return res


def _chroma_wait_indexed(url: str, n: int, timeout: float = 1800.0) -> None:
    import chromadb
    from chromadb.config import Settings
    host, port = url.rsplit("//", 1)[1].split(":")
    client = chromadb.HttpClient(host=host, port=int(port), settings=Settings(anonymized_telemetry=False))
    coll = client.get_collection("bench", embedding_function=None)
    deadline = time.perf_counter() + timeout
    while coll.count() < n and time.perf_counter() < deadline:
        time.sleep(0.2)


def _version(dist: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- report
def operating_point(rows: Sequence[dict[str, Any]], target: float = RECALL_TARGET) -> dict[str, Any] | None:
    """The fastest sweep point with recall@10 >= ``target`` (None if none reaches it)."""
    ok = [r for r in rows if "qps" in r and r.get("recall@10", 0) >= target]
    return max(ok, key=lambda r: r["qps"]) if ok else None


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Goal checks of issue 8 computed from the measured rows."""
    eng = {r["engine"]: r for r in results["engines"] if "not_run" not in r}
    out: dict[str, Any] = {}
    if "hnswlib" in eng and "s5vec" in eng:
        ratios = []
        for a, b in zip(eng["hnswlib"]["search"], eng["s5vec"]["search"]):
            ratios.append({"ef": a["knob"], "p50_ratio": b["p50_ms"] / a["p50_ms"], "qps_ratio": a["qps"] / b["qps"]})
        out["in_process_s5vec_over_hnswlib"] = ratios
    ops = {name: operating_point(r.get("search", [])) for name, r in eng.items()}
    for name, r in results.get("http", {}).items():
        if "not_run" not in r:
            ops[name] = operating_point(r.get("search", []))
    out["operating_points"] = {k: ({x: v[x] for x in ("knob", "recall@10", "qps", "p50_ms", "p99_ms")} if v else None)
                               for k, v in ops.items()}
    return out


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    d = results["data"]
    m = results["machine"]
    lines = [f"# s5vec vs peers — {d['description']}", "",
             f"{d['base_vectors']:,} × {d['dimension']}-d, {d['queries']} queries, k=10, ground truth: {d['ground_truth']}. "
             f"Machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores, {(m.get('mem_total_bytes') or 0) / 2**30:.0f} GiB; "
             f"load average at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')}. "
             f"Started {results['started_utc']}, took {results['elapsed_s'] / 60:.1f} min.", ""]
    lines += ["## Engines", "", "| engine | version | settings |", "|---|---|---|"]
    for r in results["engines"] + list(results.get("http", {}).values()):
        s = "; ".join(f"{k}={v}" for k, v in r.get("settings", {}).items())
        lines.append(f"| {r['engine']} | {results['versions'].get(r['engine'].removesuffix('-http'), '')} | "
                     f"{('**not run**: ' + r['not_run']) if 'not_run' in r else s} |")
    lines += ["", f"## Operating point at recall@10 ≥ {RECALL_TARGET} (fastest sweep point reaching it)", "",
              "| engine | knob | recall@10 | QPS | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, op in results["summary"]["operating_points"].items():
        if op:
            lines.append(f"| {name} | {op['knob']} | {op['recall@10']:.4f} | {op['qps']:.0f} | {op['p50_ms']:.3f} | "
                         f"{op['p99_ms']:.3f} |")
        else:
            lines.append(f"| {name} | – | never reached {RECALL_TARGET} | | | |")
    lines += ["", "## Recall / QPS sweep (in process: single thread, one query per call; HTTP: "
              f"{results['parameters']['http_clients']} concurrent clients)", "",
              "| engine | knob | recall@10 | QPS | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    for r in results["engines"] + list(results.get("http", {}).values()):
        for row in r.get("search", []):
            if "qps" in row:
                lines.append(f"| {r['engine']} | {row['knob']} | {row['recall@10']:.4f} | {row['qps']:.0f} | "
                             f"{row['p50_ms']:.3f} | {row['p99_ms']:.3f} |")
    lines += ["", "## Filtered search (`views >= X`, native filter of each engine)", "",
              "| engine | knob | " + " | ".join(f"{c['target']:.1%} recall / QPS" for c in results["filters"]) + " |",
              "|---|---:|" + "---:|" * len(results["filters"])]
    for r in results["engines"]:
        if r.get("filtered"):
            cells = [f"{row['recall@10']:.3f} / {row['qps']:.0f}" for row in r["filtered"]]
            lines.append(f"| {r['engine']} | {r['filtered'][0]['knob']} | " + " | ".join(cells) + " |")
    lines += ["", "## Ingest, memory, disk, restart", "",
              "| engine | ingest vectors/s | durable | RSS growth MiB | RSS per 1M vectors GiB | disk bytes/vector | "
              "spawn → first result s |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in results["engines"] + list(results.get("http", {}).values()):
        if "not_run" in r:
            continue
        ing = r.get("ingest", {})
        durable = DURABLE.get(r["engine"], "")
        rss = r.get("rss_delta_bytes")
        per_m = r.get("rss_per_million_bytes")
        lines.append(f"| {r['engine']} | {_fmt(ing.get('vectors_per_s'), 0)} | {durable} | "
                     f"{_fmt(rss / 2**20 if rss else None, 0)} | {_fmt(per_m / 2**30 if per_m else None)} | "
                     f"{_fmt(r.get('disk_bytes_per_vector'), 0)} | "
                     f"{_fmt(r.get('restart', {}).get('spawn_to_first_result_s'))} |")
    ratios = results["summary"].get("in_process_s5vec_over_hnswlib")
    if ratios:
        lines += ["", "In process, s5vec ÷ raw hnswlib p50 latency per ef: "
                  + ", ".join(f"ef={r['ef']}: {r['p50_ratio']:.2f}×" for r in ratios) + " (target ≤ 1.3×)."]
    if results.get("notes"):
        lines += ["", "Notes:"] + [f"- {n}" for n in results["notes"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s5vec bench --peers", description="s5vec against peer engines in one run.")
    p.add_argument("--dataset", choices=("minilm", "glove", "synthetic-1m"), default="minilm")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_LIMIT} vectors, {QUICK_QUERIES} queries, short timings")
    p.add_argument("--limit", type=int, help="first N base vectors (ground truth recomputed)")
    p.add_argument("--queries", type=int, help=f"queries (default {SEARCH_QUERIES}, quick {QUICK_QUERIES})")
    p.add_argument("--engines", default=",".join(ENGINES + HTTP_ENGINES),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (default %(default)s)")
    p.add_argument("--min-time", type=float, help="seconds of timed search per sweep point (default 1, quick 0.3)")
    p.add_argument("--out-dir", type=Path, help="default bench-results/peers-<UTC timestamp>")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (matplotlib)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        w = argparse.ArgumentParser()
        w.add_argument("engine")
        w.add_argument("--work", type=Path)
        w.add_argument("--min-time", type=float)
        w.add_argument("--quick", action="store_true")
        a = w.parse_args(argv[1:])
        return run_worker(a.engine, a.work, a.quick, a.min_time, a.work / f"{a.engine}.json")
    if argv[:1] == ["_render"]:  # re-render results.md and the plots from a run's results.json
        out_dir = Path(argv[1])
        results = json.loads((out_dir / "results.json").read_text())
        (out_dir / "results.md").write_text(markdown(results))
        from .plots import plot_all
        plot_all(results, out_dir)
        return 0
    if argv[:1] == ["_first_query"]:
        return run_first_query(argv[1], Path(argv[3]))
    if argv[:1] == ["_load"]:
        w = argparse.ArgumentParser()
        for opt in ("--kind", "--endpoint", "--work", "--out"):
            w.add_argument(opt)
        w.add_argument("--ef", type=int)
        w.add_argument("--clients", type=int)
        w.add_argument("--min-time", type=float)
        return run_load(w.parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES + HTTP_ENGINES)
    if unknown:
        print(f"s5vec bench --peers: unknown engines {sorted(unknown)}", file=sys.stderr)
        return 2
    limit = args.limit if args.limit is not None else (QUICK_LIMIT if args.quick else None)
    nq = args.queries or (QUICK_QUERIES if args.quick else SEARCH_QUERIES)
    min_time = args.min_time if args.min_time is not None else (0.3 if args.quick else 1.0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = args.out_dir or Path("bench-results") / f"peers-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="s5vec-peers-"))
    started = time.perf_counter()
    efs = list(QUICK_EFS if args.quick else EFS)
    results: dict[str, Any] = {"started_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                               "machine": {**machine_info(), "loadavg_start": list(os.getloadavg())},
                               "versions": {e: _version(DISTRIBUTIONS[e]) for e in ENGINES},
                               "parameters": {"k": K, "http_clients": args.clients, "min_time_s": min_time,
                                              "quick": args.quick, "efs": efs, "recall_target": RECALL_TARGET,
                                              "command": "s5vec bench --peers " + " ".join(argv)},
                               "notes": [], "engines": [], "http": {}}
    try:
        results["data"] = prepare_data(args.dataset, work, limit, nq, _log)
        results["filters"] = prepare_filters(work, results["data"]["base_vectors"], _log)
        (work / "filters.json").write_text(json.dumps(results["filters"]))
        for engine in [e for e in ENGINES if e in engines]:
            _log(f"[{engine}] ...")
            row = run_engine(engine, work, args.quick, min_time)
            if "not_run" in row:
                _log(f"[{engine}] not run: {row['not_run']}")
            results["engines"].append(row)
        http_time = max(min_time * 2, 1.0)
        if "s5vec-http" in engines:
            try:
                results["http"]["s5vec-http"] = run_s5vec_http(work, results["data"], efs, args.clients, http_time)
            except Exception as exc:  # report it, keep going
                results["http"]["s5vec-http"] = {"engine": "s5vec-http", "not_run": f"failed: {type(exc).__name__}: {exc}"}
        if "chroma-http" in engines:
            try:
                results["http"]["chroma-http"] = run_chroma_http(work, results["data"], efs, args.clients, http_time)
            except Exception as exc:
                results["http"]["chroma-http"] = {"engine": "chroma-http", "not_run": f"failed: {type(exc).__name__}: {exc}"}
    finally:
        results["elapsed_s"] = time.perf_counter() - started
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        results["summary"] = summarise(results) if results.get("filters") is not None else {}
        (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
        if results.get("data"):
            (out_dir / "results.md").write_text(markdown(results))
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_plots:
        try:
            from .plots import plot_all
            for png in plot_all(results, out_dir):
                _log(f"plot: {png}")
        except ImportError as exc:
            _log(f"plots skipped: {exc} (pip install -e './tools[peers]')")
    print(markdown(results))
    _log(f"results in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
