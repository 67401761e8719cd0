"""HTTP load generator, run as its own process (``python -m s5vec_tools.http_load``).

The benchmark machine is small (2 cores) and the daemon runs on it too, so the client
must not share a GIL with the orchestrator: :mod:`s5vec_tools.run` starts this module as
a subprocess for each phase and reads its JSON report from ``--out``.

Two modes:

``ingest``
    POST ``/api/v1/collections/<c>/vectors/batch`` with batches of ``--batch`` vectors,
    ``--concurrency`` requests in flight.  Every body is JSON-encoded *before* the clock
    starts; the rate counts vectors the daemon acknowledged (``successful``).  429/503
    answers are retried after a short pause and counted.

``search``
    For each run ``EFxCLIENTS`` (``EF`` may be ``default``: no ``hnsw_ef`` sent), a warm-up,
    then ``CLIENTS`` coroutines each send one query at a time over their own keep-alive
    connection (:mod:`.rawhttp`: a request prepared once, ~4x less client CPU per request
    than aiohttp's client on the same 2 cores the server uses), cycling over the queries
    until at least one full pass is done and ``--min-time`` seconds have passed.  Latency
    is client-observed (request written → whole response read).  Responses of the first
    pass are decoded after the clock stops and scored for recall@k.  Bodies are pre-encoded per run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import numpy as np

from .dataset import load_arrays, recall_at_k
from .rawhttp import LoadPool
from .stats import cpu_seconds, latency_summary

_JSON_HEADERS = {"Content-Type": "application/json"}
_RETRY_STATUSES = (429, 503)
_MAX_RETRIES = 200


def encode_batches(base: np.ndarray, batch: int, offset: int = 0) -> list[tuple[int, bytes]]:
    """``(count, body)`` per batch: ``{"vectors": [{"id": "<row>", "vector": [...]}, ...]}``."""
    enc = msgspec.json.Encoder()
    out = []
    for lo in range(0, len(base), batch):
        rows = base[lo:lo + batch].tolist()
        items = [{"id": str(offset + lo + i), "vector": row} for i, row in enumerate(rows)]
        out.append((len(items), enc.encode({"vectors": items})))
    return out


def encode_queries(queries: np.ndarray, k: int, ef: int | None) -> list[bytes]:
    """One search body per query; ``ef`` None leaves ``hnsw_ef`` to the collection default."""
    enc = msgspec.json.Encoder()
    options: dict[str, Any] = {"include_metadata": False}
    if ef is not None:
        options["hnsw_ef"] = ef
    return [enc.encode({"vector": q, "k": k, "options": options}) for q in queries.tolist()]


async def _ingest(url: str, collection: str, bodies: list[tuple[int, bytes]], concurrency: int) -> dict[str, Any]:
    endpoint = f"{url}/api/v1/collections/{collection}/vectors/batch"
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    acked = failed = retries = 0
    latencies: list[float] = []
    problems: list[str] = []
    clock = time.perf_counter

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal acked, failed, retries
        while not queue.empty():
            count, body = queue.get_nowait()
            for _attempt in range(_MAX_RETRIES):
                t = clock()
                async with session.post(endpoint, data=body, headers=_JSON_HEADERS) as resp:
                    payload = await resp.read()
                    status = resp.status
                latencies.append(clock() - t)
                if status in _RETRY_STATUSES:
                    retries += 1
                    await asyncio.sleep(0.05)
                    continue
                break
            if status != 200:
                failed += count
                problems.append(f"HTTP {status}: {payload[:300].decode(errors='replace')}")
                continue
            reply = msgspec.json.decode(payload)
            acked += int(reply.get("successful", 0))
            if reply.get("failed", 0):
                failed += int(reply["failed"])
                problems.append(f"failed={reply['failed']} first error: {reply.get('errors', [None])[0]}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        cpu0 = cpu_seconds()
        start = clock()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = clock() - start
        end_monotonic = time.monotonic()
        cpu1 = cpu_seconds()
    return {
        "end_monotonic": end_monotonic,
        "vectors_acked": acked, "vectors_failed": failed, "batches": len(bodies),
        "concurrency": concurrency, "elapsed_s": elapsed,
        "vectors_per_s": acked / elapsed if elapsed > 0 else float("nan"),
        "retries": retries, "problems": problems[:10],
        "batch_latency": latency_summary(latencies, elapsed),
        "client_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
    }


async def _search_run(endpoint: str, bodies: list[bytes], clients: int,
                      min_time: float, warmup: int, daemon_pid: int | None) -> dict[str, Any]:
    async with LoadPool(endpoint, bodies, clients) as pool:
        await pool.warm(warmup)
        d_cpu0 = cpu_seconds(daemon_pid) if daemon_pid else None
        c_cpu0 = cpu_seconds()
        run = await pool.run(min_time)
        c_cpu1 = cpu_seconds()
        d_cpu1 = cpu_seconds(daemon_pid) if daemon_pid else None
    elapsed = run.elapsed

    ids: list[list[int]] = []
    server_ms: list[float] = []
    for payload in run.first:
        if payload is None:
            ids.append([])
            continue
        reply = msgspec.json.decode(payload)
        ids.append([int(r["id"]) for r in reply["results"]])
        if "search_time_ms" in reply:
            server_ms.append(float(reply["search_time_ms"]))
    summary = latency_summary(run.latencies, elapsed)
    return {
        "clients": clients, "errors": run.failures, "error_samples": run.errors,
        **summary, "ids": ids,
        "server_search_time_ms_p50": float(np.percentile(server_ms, 50)) if server_ms else None,
        "server_search_time_ms_mean": float(np.mean(server_ms)) if server_ms else None,
        "client_cpu_cores": ((c_cpu1 - c_cpu0) / elapsed) if c_cpu0 is not None and c_cpu1 is not None and elapsed > 0 else None,
        "daemon_cpu_cores": ((d_cpu1 - d_cpu0) / elapsed) if d_cpu0 is not None and d_cpu1 is not None and elapsed > 0 else None,
    }


def parse_runs(text: str) -> list[tuple[int | None, int]]:
    """``"16x8,64x1,defaultx1"`` → ``[(16, 8), (64, 1), (None, 1)]``."""
    runs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        ef, _, clients = part.partition("x")
        runs.append((None if ef == "default" else int(ef), int(clients or 1)))
    return runs


async def _search(args: argparse.Namespace) -> dict[str, Any]:
    _, queries = load_arrays(Path(args.data), limit=1, queries=args.queries)
    gt = np.load(args.gt) if args.gt else None
    endpoint = f"{args.url}/api/v1/collections/{args.collection}/search"
    out = []
    for ef, clients in parse_runs(args.runs):
        bodies = encode_queries(queries, args.k, ef)
        row = await _search_run(endpoint, bodies, clients, args.min_time, min(args.warmup, len(bodies) * 2),
                                args.daemon_pid)
        ids = row.pop("ids")
        row["ef"] = ef if ef is not None else "default"
        row[f"recall@{args.k}"] = recall_at_k(ids, gt, args.k) if gt is not None else None
        out.append(row)
        print(f"  http ef={row['ef']!s:<7} clients={clients:<2d} recall@{args.k}={row[f'recall@{args.k}'] or float('nan'):.4f} "
              f"qps={row['qps']:7.0f} p50={row['p50_ms']:.2f}ms p99={row['p99_ms']:.2f}ms "
              f"(client cpu {row['client_cpu_cores'] or 0:.2f}, daemon cpu {row['daemon_cpu_cores'] or 0:.2f} cores)",
              file=sys.stderr, flush=True)
    return {"runs": out}


async def _ingest_main(args: argparse.Namespace) -> dict[str, Any]:
    base, _ = load_arrays(Path(args.data), limit=args.limit, queries=1)
    t = time.perf_counter()
    bodies = encode_batches(base, args.batch)
    encode_s = time.perf_counter() - t
    del base
    result = await _ingest(args.url, args.collection, bodies, args.concurrency)
    result["client_encode_s_not_timed"] = encode_s
    result["body_bytes_total"] = sum(len(b) for _, b in bodies)
    result["batch_size"] = args.batch
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.http_load", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("ingest", "search"))
    parser.add_argument("--url", required=True, help="daemon base URL, e.g. http://127.0.0.1:7533")
    parser.add_argument("--collection", default="bench")
    parser.add_argument("--data", required=True, help="data set directory")
    parser.add_argument("--out", required=True, help="where to write the JSON report")
    parser.add_argument("--limit", type=int, default=None, help="ingest: first N base vectors")
    parser.add_argument("--batch", type=int, default=1000, help="ingest: vectors per request")
    parser.add_argument("--concurrency", type=int, default=4, help="ingest: requests in flight")
    parser.add_argument("--queries", type=int, default=None, help="search: first N queries")
    parser.add_argument("--gt", help="search: .npy of exact neighbour rows per query (for recall)")
    parser.add_argument("--runs", default="64x8", help="search: EFxCLIENTS,... (EF may be 'default')")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--min-time", type=float, default=3.0, help="search: seconds per run (at least one pass)")
    parser.add_argument("--warmup", type=int, default=200, help="search: warm-up requests per run")
    parser.add_argument("--daemon-pid", type=int, default=None, help="report the daemon's CPU use")
    args = parser.parse_args(argv)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    result = runner(_ingest_main(args) if args.mode == "ingest" else _search(args))
    Path(args.out).write_bytes(msgspec.json.encode(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
