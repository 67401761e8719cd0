"""``python -m s5vec_tools.quantizers``: the codes of one shared IVF, measured side by side.

Builds one coarse quantizer per list count (spherical k-means on a sample, as
``index/ivf.py`` trains it), copies its centroids into one IVF index per candidate code
(4-bit fast-scan PQ, RaBitQ, RaBitQ fast-scan, SQ8, ...), so every candidate scans the
same lists, and re-ranks each query's candidates exactly from the float32 rows (faiss
``knn_inner_products_by_idx``, as ``IvfSegment`` does).  Rows are the benchmark's: the
real MiniLM rows, then ``normalise(v_i + 0.3 * v_j)`` (``hybrid.write_vectors``); queries
are the data set's; ground truth is the exact top 10 by inner product (faiss, in chunks).

Per list count, candidate, nprobe and re-rank depth: recall@10 over every query; p50/p99
latency one query at a time on one thread, the candidates interleaved query by query so
load from other processes hits them alike; and QPS from two client threads, each issuing
single queries (one OpenMP thread per call), the candidates taking turns of 50 queries.
Also train and add time, code bytes per vector, the recall ceiling the probed lists allow,
the best QPS at recall@10 >= the target per candidate, and each candidate's p50 and QPS
relative to the first one's.  Prints tables, writes ``--out``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import faiss
import numpy as np
from s5vec.index.ivf import OmpThreads

from .dataset import default_data_dir, load_arrays
from .hybrid import source_state, write_vectors
from .report import finish, table
from .stats import latency_summary, machine_info

_SWIG: Any = faiss  # faiss's bundled stubs lack or mistype the SWIG names used here

DEFAULT_SCALE: Final = 1_000_000
DEFAULT_QUERIES: Final = 1000
DEFAULT_TIME_QUERIES: Final = 500
DEFAULT_TRAIN_SAMPLE: Final = 200_000
DEFAULT_NLISTS: Final = (1024, 4096)
DEFAULT_NPROBES: Final = {1024: (16, 32, 64, 128), 4096: (32, 64, 128, 256)}
"""Per list count, from ~1.6 % (1,024) or ~0.8 % (4,096) to ~6-12 % of the lists: at 1M derived
rows, fewer probes reach lists holding under ~89 % of the true neighbours, whatever the codes."""
DEFAULT_DEPTHS: Final = (160, 320, 640, 1000)
DEFAULT_CANDIDATES: Final = ("PQ96x4fs", "PQ48x4fs", "RaBitQ", "RaBitQ:qb8", "RaBitQfs", "SQ8")
K: Final = 10
TARGET: Final = 0.95
SCORE_EPS: Final = 1e-5
"""A found row counts as a true neighbour when its exact score is within this of the 10th
best (float32 dot products of unit vectors differ by ~1e-7 between faiss's blocked and
per-row kernels, and exact duplicates tie)."""
SEED: Final = 7
GT_CHUNK: Final = 200_000
PQ4_NITER: Final = 10
"""k-means iterations for the 16 centroids per PQ subspace, as ``index/ivf.py`` trains them."""
CLIENT_THREADS: Final = 2
BUILD_THREADS: Final = 2
MIN_POINTS_PER_LIST: Final = 39
WARMUP: Final = 5
QPS_CHUNK: Final = 50
"""Queries per turn when the candidates take turns on the two client threads: short turns,
so a change in load from other processes lands on every candidate alike."""

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One code to compare: a faiss index_factory code string, optionally RaBitQ's query bits."""

    name: str
    codes: str
    qb: int | None = None


@dataclass(slots=True)
class Built:
    """One trained and filled IVF index of a candidate's codes over the shared centroids."""

    codes: str
    index: Any
    owner: Any
    build: dict[str, Any]


def parse_candidate(text: str) -> Candidate:
    """``CODES`` or ``CODES:qbN`` (RaBitQ codes only, N in 1..8). Raises ArgumentTypeError."""
    codes, _, option = text.partition(":")
    if not codes:
        raise argparse.ArgumentTypeError(f"{text!r}: empty code string")
    if not option:
        return Candidate(text, codes)
    match = re.fullmatch(r"qb([1-8])", option)
    if match is None or not codes.startswith("RaBitQ"):
        raise argparse.ArgumentTypeError(f"{text!r}: the only option is :qb1..:qb8, for RaBitQ codes")
    return Candidate(text, codes, int(match.group(1)))


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: positive integers")
    return values


def _candidate_list(text: str) -> tuple[Candidate, ...]:
    found = tuple(parse_candidate(x.strip()) for x in text.split(",") if x.strip())
    if not found or len({c.name for c in found}) != len(found):
        raise argparse.ArgumentTypeError(f"{text!r}: one or more distinct candidates")
    return found



# ---------------------------------------------------------------------------- data
def load_rows(data: Path, scale: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``scale`` base rows exactly as the hybrid benchmark writes them, and the first
    ``queries`` query rows, as float32 in RAM."""
    with tempfile.TemporaryDirectory(prefix="s5vec-quantizers-") as tmp:
        path = Path(tmp) / "vectors.npy"
        derivation = write_vectors(data, scale, path, seed)
        base = np.ascontiguousarray(np.load(path), dtype=np.float32)
    _, query = load_arrays(data, 0, queries)
    return base, query, derivation


def exact_top(base: np.ndarray, queries: np.ndarray, k: int = K,
              chunk: int = GT_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, row ids) by inner product, best first, ``chunk`` base rows
    at a time so no copy of the base is made."""
    nq = len(queries)
    best_s = np.zeros((nq, 0), np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    with OmpThreads(BUILD_THREADS):
        for start in range(0, len(base), chunk):
            block = base[start:start + chunk]
            scores, ids = faiss.knn(queries, block, min(k, len(block)), faiss.METRIC_INNER_PRODUCT)
            cand_s = np.concatenate([best_s, scores], axis=1)
            cand_i = np.concatenate([best_i, ids + start], axis=1)
            order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(cand_s, order, axis=1)
            best_i = np.take_along_axis(cand_i, order, axis=1)
    return best_s, best_i


def rerank(base: np.ndarray, queries: np.ndarray, ids: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, row ids) among each query's row of candidate ids (-1 entries
    trailing), scored by faiss straight from ``base``: no gathered copy, no BLAS threads."""
    nq, d = queries.shape
    width = ids.shape[1]
    take = min(k, width)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vals = np.empty((nq, take), np.float32)
    labels = np.empty((nq, take), np.int64)
    # ld_ids is passed explicitly: faiss 1.15 reads a wrong stride for its default (-1).
    _SWIG.knn_inner_products_by_idx(faiss.swig_ptr(queries), faiss.swig_ptr(base), faiss.swig_ptr(ids), d, nq,
                                    len(base), width, take, faiss.swig_ptr(vals), faiss.swig_ptr(labels), width)
    return vals, labels


def recall(scores: np.ndarray, labels: np.ndarray, kth: np.ndarray, k: int = K) -> float:
    """Mean fraction of the top ``k`` found whose exact score reaches the ``k``-th exact best
    (within SCORE_EPS): recall@k with exact ties counted as hits."""
    hit = (labels[:, :k] >= 0) & (scores[:, :k] >= kth[:, None] - SCORE_EPS)
    return float(hit.sum() / (k * len(kth)))


# --------------------------------------------------------------------------- build
def train_coarse(sample: np.ndarray, nlist: int) -> tuple[np.ndarray, float]:
    """Centroids of ``nlist`` lists as ``index/ivf.py`` trains them (faiss IVF on inner
    product: spherical k-means), and the seconds it took."""
    owner = faiss.index_factory(sample.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(owner)
    ivf.cp.seed = SEED
    started = time.perf_counter()
    with OmpThreads(BUILD_THREADS):
        ivf.train(sample)
    seconds = time.perf_counter() - started
    return ivf.quantizer.reconstruct_n(0, nlist), seconds


def new_index(d: int, nlist: int, codes: str) -> tuple[Any, Any]:
    """(owner, concrete IVF index) from ``IVF{nlist},{codes}`` on inner product.
    Raises RuntimeError (faiss) for a code string faiss does not know."""
    owner = faiss.index_factory(d, f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(owner))
    return owner, ivf


def build(base: np.ndarray, sample: np.ndarray, centroids: np.ndarray, codes: str) -> Built:
    """Train ``codes`` on ``sample`` over the given centroids (the coarse quantizer is not
    retrained: it is full and trained) and add every base row."""
    owner, ivf = new_index(base.shape[1], len(centroids), codes)
    ivf.quantizer.add(centroids)
    if isinstance(ivf, faiss.IndexIVFPQFastScan):
        ivf.pq.cp.niter = PQ4_NITER
        ivf.pq.cp.seed = SEED
    with OmpThreads(BUILD_THREADS):
        started = time.perf_counter()
        ivf.train(sample)
        trained = time.perf_counter()
        ivf.add(base)
        added = time.perf_counter()
    if ivf.quantizer.ntotal != len(centroids) or ivf.ntotal != len(base):
        raise RuntimeError(f"{codes}: the shared centroids were replaced or rows went missing")
    stored = len(faiss.serialize_index(ivf)) - len(faiss.serialize_index(ivf.quantizer))
    return Built(codes, ivf, owner, {
        "codes": codes, "class": type(ivf).__name__, "code_size": int(ivf.code_size),
        "stored_bytes_per_vector": stored / len(base), "by_residual": bool(ivf.by_residual),
        "train_s": trained - started, "add_s": added - trained, "threads": BUILD_THREADS})


def search_params(candidate: Candidate, nprobe: int) -> Any:
    """faiss search parameters: nprobe, and RaBitQ's query bits when the candidate sets them."""
    if candidate.qb is None:
        return faiss.SearchParametersIVF(nprobe=nprobe)
    params = faiss.IVFRaBitQSearchParameters()
    params.nprobe = nprobe
    params.qb = candidate.qb
    return params


def ceilings(centroids: np.ndarray, base: np.ndarray, queries: np.ndarray, truth: np.ndarray,
             nprobes: Sequence[int]) -> list[dict[str, Any]]:
    """Recall@10 an exact scan of the probed lists would reach: the fraction of true
    neighbours whose list is among a query's ``nprobe`` nearest centroids."""
    quantizer = faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(centroids)
    with OmpThreads(BUILD_THREADS):
        _, home = quantizer.search(np.ascontiguousarray(base[truth.ravel()]), 1)
        _, probed = quantizer.search(queries, max(nprobes))
    home = home.reshape(truth.shape)
    return [{"nprobe": p, "ceiling": float((home[:, :, None] == probed[:, None, :p]).any(axis=2).mean())}
            for p in nprobes]


def coarse_latency(centroids: np.ndarray, queries: np.ndarray, nprobe: int) -> float:
    """p50 milliseconds of the coarse search alone (flat, one thread, one query per call)."""
    quantizer = faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(centroids)
    lat = []
    with OmpThreads(1):
        for i in range(len(queries)):
            t = time.perf_counter()
            quantizer.search(queries[i:i + 1], nprobe)
            lat.append(time.perf_counter() - t)
    return float(np.percentile(lat, 50) * 1000.0)


# ------------------------------------------------------------------------- measure
def _one(index: Any, params: Any, base: np.ndarray, query: np.ndarray, depth: int) -> float:
    started = time.perf_counter()
    _, ids = index.search(query, depth, params=params)
    rerank(base, query, ids)
    return time.perf_counter() - started


def _caller(index: Any, params: Any, base: np.ndarray, depth: int) -> Callable[[np.ndarray], float]:
    def call(query: np.ndarray) -> float:
        return _one(index, params, base, query, depth)
    return call


def _one_thread() -> None:
    faiss.omp_set_num_threads(1)


def measure_nlist(base: np.ndarray, queries: np.ndarray, timed: np.ndarray, kth: np.ndarray,
                  built: dict[str, Built], candidates: Sequence[Candidate], nlist: int,
                  nprobes: Sequence[int], depths: Sequence[int], log: Log) -> list[dict[str, Any]]:
    """Every (candidate, nprobe, depth) point of one list count: recall over ``queries``,
    serial latency over ``timed`` (candidates interleaved per query), 2-thread QPS."""
    points: list[dict[str, Any]] = []
    singles = [timed[i:i + 1] for i in range(len(timed))]
    with ThreadPoolExecutor(CLIENT_THREADS, initializer=_one_thread) as pool:
        for n_point, (nprobe, depth) in enumerate((p, d) for p in nprobes for d in depths):
            params = {c.name: search_params(c, nprobe) for c in candidates}
            index = {c.name: built[c.codes].index for c in candidates}
            row: dict[str, dict[str, Any]] = {}
            with OmpThreads(BUILD_THREADS):
                for c in candidates:
                    _, ids = index[c.name].search(queries, depth, params=params[c.name])
                    scores, labels = rerank(base, queries, ids)
                    row[c.name] = {"nlist": nlist, "candidate": c.name, "nprobe": nprobe, "rerank": depth,
                                   "recall@10": recall(scores, labels, kth)}
            lat: dict[str, list[float]] = {c.name: [] for c in candidates}
            with OmpThreads(1):
                for c in candidates:
                    for q in singles[:WARMUP]:
                        _one(index[c.name], params[c.name], base, q, depth)
                for i, q in enumerate(singles):
                    for c in _rotated(candidates, i):
                        lat[c.name].append(_one(index[c.name], params[c.name], base, q, depth))
            busy = {c.name: 0.0 for c in candidates}
            done: dict[str, list[float]] = {c.name: [] for c in candidates}
            calls = {c.name: _caller(index[c.name], params[c.name], base, depth) for c in candidates}
            for c in candidates:
                list(pool.map(calls[c.name], singles[:WARMUP]))
            for n_chunk, start in enumerate(range(0, len(singles), QPS_CHUNK)):
                chunk = singles[start:start + QPS_CHUNK]
                for c in _rotated(candidates, n_point + n_chunk):
                    began = time.perf_counter()
                    done[c.name].extend(pool.map(calls[c.name], chunk))
                    busy[c.name] += time.perf_counter() - began
            for c in candidates:
                serial = latency_summary(lat[c.name], float(sum(lat[c.name])))
                row[c.name].update({"p50_ms": serial["p50_ms"], "p99_ms": serial["p99_ms"],
                                    "mean_ms": serial["mean_ms"], "qps_2_threads": len(done[c.name]) / busy[c.name],
                                    "p50_ms_2_threads": float(np.percentile(done[c.name], 50) * 1000.0)})
            for c in candidates:
                points.append(row[c.name])
            log(f"  nlist {nlist} nprobe {nprobe} rerank {depth}: " + ", ".join(
                f"{c.name} {row[c.name]['recall@10']:.3f}/{row[c.name]['qps_2_threads']:.0f}qps" for c in candidates))
    return points


def _rotated(items: Sequence[Candidate], shift: int) -> list[Candidate]:
    s = shift % len(items)
    return list(items[s:]) + list(items[:s])


def frontier(points: Sequence[dict[str, Any]], candidates: Sequence[Candidate], target: float) -> list[dict[str, Any]]:
    """Per candidate: the point of highest 2-thread QPS with recall@10 >= ``target`` (None
    when no point reaches it), its QPS relative to the first candidate's best, and the
    highest recall measured."""
    out: list[dict[str, Any]] = []
    for c in candidates:
        mine = [p for p in points if p["candidate"] == c.name]
        ok = [p for p in mine if p["recall@10"] >= target]
        best = max(ok, key=lambda p: p["qps_2_threads"]) if ok else None
        fastest = min(ok, key=lambda p: p["p50_ms"]) if ok else None
        out.append({"candidate": c.name, "target": target, "best_qps": best, "best_p50": fastest,
                    "max_recall": max((p["recall@10"] for p in mine), default=float("nan"))})
    ref = out[0]["best_qps"] if out else None
    for row in out:
        row["qps_vs_first"] = (row["best_qps"]["qps_2_threads"] / ref["qps_2_threads"]
                               if row["best_qps"] and ref else None)
    return out


def ratios(points: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Per candidate: median (and range) over the grid of its p50 and its QPS divided by the
    first candidate's at the same nlist, nprobe and depth (measured interleaved, so load
    from other processes mostly cancels)."""
    ref = {(p["nlist"], p["nprobe"], p["rerank"]): p for p in points if p["candidate"] == names[0]}
    out = []
    for name in names:
        pairs = [(p, ref[p["nlist"], p["nprobe"], p["rerank"]]) for p in points
                 if p["candidate"] == name and (p["nlist"], p["nprobe"], p["rerank"]) in ref]
        p50 = [a["p50_ms"] / b["p50_ms"] for a, b in pairs]
        qps = [a["qps_2_threads"] / b["qps_2_threads"] for a, b in pairs]
        out.append({"candidate": name, "points": len(pairs),
                    "p50_ratio": [float(np.min(p50)), float(np.median(p50)), float(np.max(p50))] if pairs else None,
                    "qps_ratio": [float(np.min(qps)), float(np.median(qps)), float(np.max(qps))] if pairs else None})
    return out


# ------------------------------------------------------------------------------ run
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s5vec_tools.quantizers",
        description="IVF codes side by side (PQ fast-scan, RaBitQ, SQ8, ...) over one shared coarse quantizer, "
                    "exact re-rank from float32: recall@10, latency, QPS, build time, bytes per vector.")
    parser.add_argument("--data", type=Path, default=default_data_dir(),
                        help="data set directory with base.f16.npy and queries.f16.npy (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE,
                        help="base rows; past the real rows, derived as in the hybrid benchmark (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES,
                        help="queries for recall (default: %(default)s)")
    parser.add_argument("--time-queries", type=int, default=DEFAULT_TIME_QUERIES,
                        help="of those, how many are timed per point (default: %(default)s)")
    parser.add_argument("--train-sample", type=int, default=DEFAULT_TRAIN_SAMPLE,
                        help="rows the coarse quantizer and the codes are trained on (default: %(default)s)")
    parser.add_argument("--nlists", type=_int_list, default=DEFAULT_NLISTS,
                        help="list counts, comma-separated (default: %(default)s)")
    parser.add_argument("--nprobes", type=_int_list, default=None,
                        help="nprobe values for every list count, comma-separated, capped at the list count "
                             f"(default: {DEFAULT_NPROBES} per list count, else nlist/128..nlist/8)")
    parser.add_argument("--depths", type=_int_list, default=DEFAULT_DEPTHS,
                        help="re-rank depths: candidates fetched from faiss and scored exactly (default: %(default)s)")
    parser.add_argument("--candidates", type=_candidate_list,
                        default=tuple(parse_candidate(c) for c in DEFAULT_CANDIDATES),
                        help="faiss code strings, comma-separated; RaBitQ codes take :qbN for the query bits "
                             f"(default: {','.join(DEFAULT_CANDIDATES)})")
    parser.add_argument("--target", type=float, default=TARGET,
                        help="recall@10 for the frontier (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="seed for derived rows and the sample (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench-quantizers.json"),
                        help="JSON results (default: %(default)s)")
    return parser


def nprobes_for(nlist: int, given: Sequence[int] | None) -> tuple[int, ...]:
    """The nprobe grid of one list count, capped at ``nlist``, without repeats."""
    grid = given if given is not None else DEFAULT_NPROBES.get(
        nlist, tuple(max(1, nlist >> s) for s in (7, 6, 5, 4, 3)))
    return tuple(sorted({min(p, nlist) for p in grid}))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    problems = []
    if args.scale < 1 or args.queries < 1 or not 1 <= args.time_queries <= args.queries:
        problems.append("--scale and --queries must be positive, --time-queries within 1..--queries")
    if min(args.train_sample, args.scale) < max(args.nlists) * MIN_POINTS_PER_LIST:
        problems.append(f"--train-sample (and --scale) must give >= {MIN_POINTS_PER_LIST} rows per list")
    if not (args.data / "base.f16.npy").is_file():
        problems.append(f"no data set at {args.data} (use --data)")
    if problems:
        for line in problems:
            print(f"s5vec_tools.quantizers: {line}", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = run(args, log)
    finish(results, args.out, started, render)
    return 0


def run(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    candidates: tuple[Candidate, ...] = args.candidates
    machine = machine_info()
    machine["faiss"] = faiss.__version__
    machine["loadavg_start"] = list(os.getloadavg())
    t0 = time.perf_counter()
    base, queries, derivation = load_rows(args.data, args.scale, args.queries, args.seed)
    n, d = base.shape
    for codes in dict.fromkeys(c.codes for c in candidates):
        new_index(d, max(args.nlists), codes)  # an unknown code string fails here, before the long work
    data_s = time.perf_counter() - t0
    log(f"quantizers: {n} rows x {d}, {len(queries)} queries ({data_s:.1f} s)")
    t0 = time.perf_counter()
    truth_s, truth = exact_top(base, queries)
    gt_s = time.perf_counter() - t0
    kth = truth_s[:, min(K, truth_s.shape[1]) - 1]
    log(f"ground truth: {gt_s:.1f} s")
    rng = np.random.default_rng(args.seed)
    sample = base[np.sort(rng.choice(n, min(args.train_sample, n), replace=False))]
    timed = queries[:args.time_queries]
    results: dict[str, Any] = {
        "machine": machine, "source": source_state(), "out": str(args.out),
        "parameters": {
            "data": str(args.data), "scale": n, "dimension": d, "queries": len(queries), "time_queries": len(timed),
            "train_sample": len(sample), "nlists": list(args.nlists), "depths": list(args.depths),
            "candidates": [c.name for c in candidates], "k": K, "target": args.target, "seed": args.seed,
            "metric": "inner product on unit vectors", "derivation": derivation,
            "ground_truth": f"exact top {K} by faiss.knn (float32), {GT_CHUNK} base rows per chunk",
            "recall": f"found rows whose exact score >= the {K}th exact best - {SCORE_EPS} (ties count)",
            "rerank": "faiss knn_inner_products_by_idx over the candidates' float32 rows (as IvfSegment)",
            "coarse": "flat inner-product quantizer, trained once per list count, shared by every candidate",
            "latency": "one query per call, 1 OpenMP thread, candidates interleaved query by query",
            "qps": f"{CLIENT_THREADS} client threads, one query per call each, 1 OpenMP thread per call; "
                   f"candidates take turns of {QPS_CHUNK} queries",
        },
        "timings": {"data_s": data_s, "ground_truth_s": gt_s},
        "nlists": [],
    }
    all_points: list[dict[str, Any]] = []
    for nlist in args.nlists:
        nprobes = nprobes_for(nlist, args.nprobes)
        centroids, coarse_s = train_coarse(sample, nlist)
        log(f"nlist {nlist}: coarse quantizer trained in {coarse_s:.1f} s")
        ceiling_probes = sorted({1 << i for i in range(nlist.bit_length()) if 1 << i <= nlist} | set(nprobes))
        section: dict[str, Any] = {
            "nlist": nlist, "nprobes": list(nprobes), "coarse_train_s": coarse_s,
            "coarse_p50_ms": coarse_latency(centroids, timed, max(nprobes)),
            "ceiling": ceilings(centroids, base, queries, truth, ceiling_probes), "builds": []}
        built: dict[str, Built] = {}
        for codes in dict.fromkeys(c.codes for c in candidates):
            built[codes] = build(base, sample, centroids, codes)
            section["builds"].append(built[codes].build)
            b = built[codes].build
            log(f"  {codes}: {b['class']}, {b['code_size']} B/code, train {b['train_s']:.1f} s, add {b['add_s']:.1f} s")
        section["points"] = measure_nlist(base, queries, timed, kth, built, candidates, nlist, nprobes,
                                          args.depths, log)
        section["frontier"] = frontier(section["points"], candidates, args.target)
        all_points.extend(section["points"])
        results["nlists"].append(section)
        del built
    results["frontier"] = frontier(all_points, candidates, args.target)
    return results


# --------------------------------------------------------------------------- render
def render(results: dict[str, Any]) -> str:
    """The results as plain-text tables."""
    p, m = results["parameters"], results["machine"]
    out = [(f"IVF codes side by side: {p['scale']} rows x {p['dimension']}, {p['queries']} queries "
            f"({p['time_queries']} timed), train sample {p['train_sample']}, faiss {m.get('faiss')}"),
           (f"  {m.get('cpu_model')}, {m.get('cpu_usable')} usable CPUs, load {m.get('loadavg_start')} -> "
            f"{m.get('loadavg_end')}; absolute figures are noisy (shared machine), compare within a row group"),
           ""]
    for s in results["nlists"]:
        out.append(f"nlist {s['nlist']}: coarse train {s['coarse_train_s']:.1f} s, coarse search p50 "
                   f"{s['coarse_p50_ms']:.3f} ms; recall ceiling of the probed lists: " + ", ".join(
                       f"{c['nprobe']}: {c['ceiling']:.3f}" for c in s["ceiling"] if c["nprobe"] in s["nprobes"]))
        out.append(table(["codes", "class", "B/code", "B/vector stored", "train s", "add s"],
                         [[b["codes"], b["class"], b["code_size"], round(b["stored_bytes_per_vector"], 1),
                           round(b["train_s"], 2), round(b["add_s"], 2)] for b in s["builds"]]))
        out.append("")
        out.append(table(["candidate", "nprobe", "rerank", "recall@10", "p50 ms", "p99 ms", "QPS 2 thr"],
                         [[x["candidate"], x["nprobe"], x["rerank"], round(x["recall@10"], 4), round(x["p50_ms"], 3),
                           round(x["p99_ms"], 3), round(x["qps_2_threads"])] for x in s["points"]]))
        out.append("")
    names = p["candidates"]
    for s in results["nlists"]:
        out.append(f"nlist {s['nlist']}: p50 and QPS relative to {names[0]} at the same nprobe and depth "
                   "(median [min-max] over the grid)")
        out.append(table(["candidate", "p50 ratio", "QPS ratio"],
                         [[r["candidate"], _spread(r["p50_ratio"]), _spread(r["qps_ratio"])]
                          for r in ratios(s["points"], names)]))
        out.append("")
    out.append(f"Frontier: best QPS (2 threads) at recall@10 >= {p['target']}")
    rows = []
    for f in results["frontier"]:
        b = f["best_qps"]
        rows.append([f["candidate"], b["nlist"] if b else None, b["nprobe"] if b else None, b["rerank"] if b else None,
                     round(b["recall@10"], 4) if b else None, round(b["p50_ms"], 3) if b else None,
                     round(b["qps_2_threads"]) if b else None,
                     round(f["qps_vs_first"], 2) if f["qps_vs_first"] is not None else None,
                     _lowest(f["best_p50"]), round(f["max_recall"], 4)])
    out.append(table(["candidate", "nlist", "nprobe", "rerank", "recall@10", "p50 ms", "QPS 2 thr", "vs first",
                      "lowest p50 (nlist/nprobe/rerank)", "max recall"], rows))
    return "\n".join(out)


def _lowest(point: dict[str, Any] | None) -> str:
    return "-" if point is None else f"{point['p50_ms']:.2f} ms ({point['nlist']}/{point['nprobe']}/{point['rerank']})"


def _spread(values: Sequence[float] | None) -> str:
    return "-" if values is None else f"{values[1]:.2f} [{values[0]:.2f}-{values[2]:.2f}]"


if __name__ == "__main__":
    raise SystemExit(main())
