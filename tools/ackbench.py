"""Write acknowledgement latency by durability mode against the S5 portal double.

``python -m s5vec_tools.ackbench [--writes 200] [--latency-ms 0 50] [--out bench-results/reliability/replication.json]``

For each injected portal latency (the double runs as a subprocess, ``--latency-ms``, on every
request) and each ``replication.durability`` (local, replicated), open the engine on a
fresh data directory with the real portal store (encrypted blobs, signed registry entries,
WAL shipping every ``--ship-interval-ms``) and time ``Database.upsert`` of one 384-d vector
from the call to its acknowledgement: once with one writer (each write alone), once with
``--clients`` concurrent writers (group commit shares a chunk), then a steady ``--rate``
writes/s for ``--seconds`` while sampling the shipping lag. Reports p50/p99/max, writes
per second, chunks shipped, and checks that every replicated write was on the portal when
acknowledged (a fresh node with the same phrase recovers all of them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from s5vec.engine import Database, EngineConfig
from s5vec.engine.config import ReplicationConfig
from s5vec.index import CollectionConfig, RawItem
from s5vec.storage import RootMirror
from s5vec.storage.portal import PortalBlobStore
from s5vec.storage.s5.seed import Identity, generate_phrase

from .daemon_proc import free_port

DIM = 384
ENGINE = EngineConfig(checkpoint_interval_s=3600, storage_probe_s=3600)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else 0.0


async def wait_for_portal(url: str, proc: subprocess.Popen[bytes]) -> None:
    import aiohttp
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError("the portal double exited")
            try:
                async with session.get(url + "s5/registry", params={"pk": "x"}) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the portal double did not start")


async def run_mode(url: str, durability: str, writes: int, clients: int, ship_ms: int,
                   root: Path, rate: int, seconds: float) -> dict[str, Any]:
    identity = Identity.from_phrase(generate_phrase())
    data_dir = root / f"{durability}-{time.monotonic_ns()}"
    data_dir.mkdir()
    remote = PortalBlobStore(url, identity, cache_dir=data_dir / "s5-cache")
    replication = ReplicationConfig(ship_interval_ms=ship_ms, durability=durability)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(writes * 2, DIM)).astype(np.float32)
    result: dict[str, Any] = {"durability": durability}
    async with RootMirror(remote, data_dir / "ROOT") as store:
        db = await Database.open(data_dir, ENGINE, store, storage_mode="portal", replication=replication)
        try:
            await db.create_collection(CollectionConfig("c", DIM))
            await db.upsert("c", [RawItem("warm", vectors[0], {})])  # login, first chunk
            for name, concurrency in (("one_writer", 1), (f"{clients}_writers", clients)):
                latencies: list[float] = []
                queue = list(range(writes))
                offset = 0 if concurrency == 1 else writes

                async def writer() -> None:
                    while queue:
                        i = queue.pop()
                        started = time.perf_counter()
                        await db.upsert("c", [RawItem(f"{name}-{i}", vectors[offset + i], {"i": i})])
                        latencies.append(time.perf_counter() - started)

                began = time.perf_counter()
                chunks_before = db.shipping["chunks_shipped"] if db.shipping else 0
                await asyncio.gather(*(writer() for _ in range(concurrency)))
                elapsed = time.perf_counter() - began
                ship = db.shipping or {}
                result[name] = {
                    "writes": len(latencies), "ack_p50_ms": round(percentile(latencies, 50) * 1000, 2),
                    "ack_p99_ms": round(percentile(latencies, 99) * 1000, 2),
                    "ack_max_ms": round(max(latencies) * 1000, 2),
                    "writes_per_s": round(len(latencies) / elapsed, 1),
                    "chunks": ship.get("chunks_shipped", 0) - chunks_before,
                }
            result["steady"] = await steady_load(db, vectors, rate, seconds)
            lsn = db.applied_lsn
            shipped_at_end = db.shipping["shipped_lsn"] if db.shipping else 0
        finally:
            await db.close(checkpoint=False)
    # a fresh node with only the phrase: how many of the writes does the portal already hold?
    fresh = root / f"fresh-{time.monotonic_ns()}"
    fresh.mkdir()
    async with RootMirror(PortalBlobStore(url, identity, cache_dir=fresh / "s5-cache"), fresh / "ROOT") as store:
        db = await Database.open(fresh, ENGINE, store, storage_mode="portal", replication=replication)
        try:
            result["fresh_node_records"] = len(db.collection("c"))
            result["fresh_node_lsn"] = db.applied_lsn
        finally:
            await db.close(checkpoint=False)
    result["writer_lsn"] = lsn
    result["shipped_lsn_before_close"] = shipped_at_end
    return result


async def steady_load(db: Database, vectors: np.ndarray, rate: int, seconds: float) -> dict[str, Any]:
    """``rate`` single-vector writes a second for ``seconds`` (each write its own task, so a
    slow acknowledgement does not slow the offered load); the shipper's lag sampled every
    20 ms: the oldest unshipped record's age and the count of unshipped records (what a
    machine loss at that moment would lose in local durability)."""
    tasks: list[asyncio.Task[None]] = []
    latencies: list[float] = []
    max_lag, max_unshipped = 0.0, 0
    count = int(rate * seconds)

    async def write(i: int) -> None:
        started = time.perf_counter()
        await db.upsert("c", [RawItem(f"steady-{i}", vectors[i % len(vectors)], {"i": i})])
        latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    next_sample = began
    for i in range(count):
        due = began + i / rate
        while (now := time.perf_counter()) < due:
            await asyncio.sleep(min(due - now, 0.005))
        tasks.append(asyncio.create_task(write(i)))
        if now >= next_sample:
            ship = db.shipping or {}
            max_lag = max(max_lag, ship.get("lag_seconds", 0.0))
            max_unshipped = max(max_unshipped, ship.get("pending_records", 0))
            next_sample = now + 0.02
    await asyncio.gather(*tasks)
    return {"writes": count, "offered_per_s": rate, "achieved_per_s": round(count / (time.perf_counter() - began), 1),
            "ack_p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "ack_p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "max_ship_lag_s": round(max_lag, 3), "max_unshipped_records": max_unshipped}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="s5vec-ackbench-") as tmp:
        for latency in args.latency_ms:
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "s5vec.testing.portal", "--port", str(port),
                                     "--latency-ms", str(latency)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}/"
            try:
                await wait_for_portal(url, proc)
                for durability in ("local", "replicated"):
                    run = await run_mode(url, durability, args.writes, args.clients, args.ship_interval_ms,
                                         Path(tmp), args.rate, args.seconds)
                    run["portal_latency_ms"] = latency
                    runs.append(run)
                    print(json.dumps(run), flush=True)
            finally:
                proc.terminate()
                proc.wait(10)
    return {"runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.ackbench", description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=200, help="writes per phase")
    parser.add_argument("--clients", type=int, default=16, help="concurrent writers of the second phase")
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--ship-interval-ms", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=500, help="writes per second of the steady phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the steady phase")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.time()
    report = asyncio.run(bench(args))
    written = 1 + 2 * args.writes + int(args.rate * args.seconds)
    ok = all(run["fresh_node_records"] == written for run in report["runs"]
             if run["durability"] == "replicated")
    summary: dict[str, Any] = {}
    for run in report["runs"]:
        key = f"{run['durability']} @ {run['portal_latency_ms']:g} ms"
        for phase in ("one_writer", f"{args.clients}_writers"):
            p = run[phase]
            summary[f"{key}, {phase.replace('_', ' ')}"] = {
                "ack p50 ms": p["ack_p50_ms"], "ack p99 ms": p["ack_p99_ms"], "writes/s": p["writes_per_s"],
                "chunks": p["chunks"]}
        steady = run["steady"]
        summary[f"{key}, steady {args.rate} writes/s for {args.seconds:g} s"] = {
            "achieved writes/s": steady["achieved_per_s"], "ack p50 ms": steady["ack_p50_ms"],
            "ack p99 ms": steady["ack_p99_ms"], "max ship lag s": steady["max_ship_lag_s"],
            "max unshipped records": steady["max_unshipped_records"]}
        summary[f"{key}, state at the last acknowledgement"] = {
            "WAL records logged": run["writer_lsn"],
            "not yet shipped (lost if the machine died then)": run["writer_lsn"] - run["shipped_lsn_before_close"]}
        summary[f"{key}, fresh node from the phrase after the writer closed"] = {
            "records": run["fresh_node_records"], "of written": written}
    out = {"name": "replication", "command": " ".join(["python -m s5vec_tools.ackbench", *(argv or sys.argv[1:])]),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
           "seconds": round(time.time() - started, 1), "ok": ok, "summary": summary, "runs": report["runs"]}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
