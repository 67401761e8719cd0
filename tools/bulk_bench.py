"""``python -m s5vec_tools.bulk_bench`` (also ``s5vec bench --bulk``): bulk loading through
REST into a daemon subprocess, on real MiniLM vectors (minilm-100k, rows past 100k derived
as ``normalise(v_i + 0.3 v_j)``, see :func:`.hybrid.write_vectors`) with the synthetic video
metadata of :mod:`.synthetic` (95 % historical by default).

Measures (1) durable ingest: rows acknowledged by ``POST .../bulk`` per second, from the
first request to the last answer (the client on the same host, its Arrow bodies encoded
before the clock starts: the rate is the server's); (2) time until every record is
searchable and indexed: from the first request until the collection has no pending or
parked rows and ``historical + indexed == scale`` (the migrate job runs on its own; the
benchmark only asks it to run again when it stopped with old rows left, as a scheduled
run would a minute later). Prints a table; writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from .daemon_proc import Daemon
from .dataset import default_data_dir
from .hybrid import PAYLOAD, write_vectors
from .run import bench_cache
from .stats import machine_info
from .synthetic import day_anchor, make_catalogue

CHUNK: Final = 8192
IN_FLIGHT: Final = 2


def encode_bodies(vectors_path: Path, scale: int, historical: float, chunk: int, log: Any) -> list[tuple[bytes, int]]:
    """Arrow IPC bodies of ``chunk`` rows each: ids, vectors, metadata as JSON, timestamps."""
    import msgspec
    import pyarrow as pa
    import pyarrow.ipc as ipc

    encode = msgspec.json.Encoder().encode
    vectors = np.load(vectors_path, mmap_mode="r")
    cat = make_catalogue(scale, historical, day_anchor(time.time()))
    bodies = []
    for start in range(0, scale, chunk):
        stop = min(scale, start + chunk)
        docs = cat.documents(start, stop)
        rows = np.ascontiguousarray(vectors[start:stop], np.float32)
        table = pa.table({"id": pa.array([str(i) for i in range(start, stop)]),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1]),
                          "metadata": pa.array([encode(d) for d in docs], pa.binary()),
                          "timestamp": pa.array(cat.minted[start:stop].astype(np.float64))})
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        bodies.append((sink.getvalue(), stop - start))
        if (start // chunk) % 25 == 0:
            log(f"  encoded {stop}/{scale}")
    return bodies


async def send(url: str, bodies: list[tuple[bytes, int]], in_flight: int, log: Any) -> dict[str, Any]:
    from s5vec.client import AsyncClient

    done = 0
    started = time.perf_counter()
    queue = list(enumerate(bodies))
    async with AsyncClient(url, timeout=600, retries=0) as client:
        async def worker() -> None:
            nonlocal done
            while queue:
                n, (body, rows) = queue.pop(0)
                result = await client.bulk_upsert("bulk", body, rows=rows)
                assert result.records == rows
                done += rows
                if n % 25 == 0:
                    elapsed = time.perf_counter() - started
                    log(f"  acknowledged {done} rows, {done / elapsed:,.0f}/s; load {os.getloadavg()[0]:.1f}")
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    return {"rows": done, "seconds": elapsed, "vectors_per_s": done / elapsed, "requests": len(bodies)}


def wait_indexed(daemon: Daemon, scale: int, started: float, timeout: float, log: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = 0.0
    while time.monotonic() < deadline:
        _, stats = daemon.request("GET", "/api/v1/collections/bulk")
        if (stats["pending"] == 0 and stats["parked"] == 0
                and stats["historical"] + stats["indexed"] == scale and stats["count"] == scale):
            return {"seconds_from_first_request": time.perf_counter() - started, "stats": stats}
        if stats["parked"] and stats["pending"] == 0:
            daemon.request("POST", "/api/v1/admin/migrate?wait=false")  # 409 while it runs
        if time.monotonic() - last > 15:
            last = time.monotonic()
            log(f"  historical {stats['historical']}, indexed {stats['indexed']}, parked {stats['parked']}, "
                f"pending {stats['pending']}; load {os.getloadavg()[0]:.1f}")
        time.sleep(0.5)
    raise TimeoutError(f"not every record indexed after {timeout} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s5vec bench --bulk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1_000_000, help="rows to load (default %(default)s)")
    parser.add_argument("--historical", type=float, default=0.95, help="share of historical rows (default 0.95)")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="rows per request (default %(default)s)")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT, help="concurrent requests (default %(default)s)")
    parser.add_argument("--data", type=Path, default=None, help="minilm-100k directory")
    parser.add_argument("--workdir", type=Path, help="daemon data and log (default: a temporary directory, removed)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for indexing")
    parser.add_argument("--out", type=Path, default=Path("bench-results/bulk.json"))
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    data = args.data or default_data_dir()
    cache = bench_cache()
    cache.mkdir(parents=True, exist_ok=True)
    vectors_path = cache / f"minilm-derived-{args.scale}.npy"
    if not vectors_path.exists():
        log(f"writing {args.scale} vectors to {vectors_path} ...")
        write_vectors(data, args.scale, vectors_path, seed=1)
    log("encoding Arrow bodies ...")
    bodies = encode_bodies(vectors_path, args.scale, args.historical, args.chunk, log)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="s5vec-bulk-"))
    workdir.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(workdir / "data", workdir / "daemon.log")
    result: dict[str, Any] = {"machine": {**machine_info(), "loadavg_start": list(os.getloadavg())},
                              "parameters": {"scale": args.scale, "historical": args.historical, "chunk": args.chunk,
                                             "in_flight": args.in_flight, "data": str(data),
                                             "format": "Arrow IPC stream, metadata as JSON text, encoded beforehand"}}
    try:
        daemon.start()
        daemon.wait_status("/ready")
        status, _ = daemon.request("POST", "/api/v1/collections", {
            "name": "bulk", "dimension": 384, "metric": "cosine",
            "payload_indexes": {path: kind for path, kind in PAYLOAD}})
        assert status == 201, status
        started = time.perf_counter()
        log(f"sending {len(bodies)} requests ...")
        result["ingest"] = asyncio.run(send(daemon.url, bodies, args.in_flight, log))
        del bodies
        log(f"durable ingest: {result['ingest']['vectors_per_s']:,.0f} vectors/s; waiting for indexing ...")
        result["indexed"] = wait_indexed(daemon, args.scale, started, args.timeout, log)
        result["machine"]["loadavg_end"] = list(os.getloadavg())
        daemon.stop()
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import json
    args.out.write_text(json.dumps(result, indent=2))
    ing, idx = result["ingest"], result["indexed"]
    print(f"| rows | durable ingest (vectors/s) | ingest s | searchable + indexed s |\n|---|---|---|---|\n"
          f"| {args.scale:,} | {ing['vectors_per_s']:,.0f} | {ing['seconds']:.1f} | "
          f"{idx['seconds_from_first_request']:.1f} |")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
