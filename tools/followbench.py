"""Follower lag under a steady write rate, and a new follower's time to ready, on the S5
portal double.

``python -m s5vec_tools.followbench [--rate 1000] [--seconds 20] [--vectors 100000] [--out FILE]``

Lag: a writer (default settings: local durability, shipping every 1 s) and a follower
(polling every 250 ms) in this process on the portal double (a subprocess); ``--rate``
single-vector upserts a second for ``--seconds``; every 50 ms the writer's applied LSN is
noted, and the lag of an LSN is the time from the writer applying it to the follower
applying it (so it includes the shipping interval, the upload and the poll).

Ready: the writer loads ``--vectors`` real 384-d MiniLM embeddings (the shared data set)
in all: all but 1,000, a checkpoint, then the last 1,000 (shipped WAL only); a new follower on an empty directory
with only the phrase's store is timed from start to open and caught up (it serves searches
then). Writes ``--out`` (JSON, the RELIABILITY.md input).
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
from s5vec.engine import Database, EngineConfig, EventBus, Query
from s5vec.engine.config import ReplicationConfig
from s5vec.engine.following import Follower
from s5vec.index import CollectionConfig, RawItem
from s5vec.storage import RootMirror
from s5vec.storage.portal import PortalBlobStore
from s5vec.storage.s5.seed import Identity, generate_phrase

from .ackbench import wait_for_portal
from .daemon_proc import free_port
from .dataset import default_data_dir

ENGINE = EngineConfig(checkpoint_interval_s=3600, storage_probe_s=3600)


def store(url: str, identity: Identity, data_dir: Path) -> RootMirror:
    data_dir.mkdir(parents=True, exist_ok=True)
    return RootMirror(PortalBlobStore(url, identity, cache_dir=data_dir / "s5-cache"), data_dir / "ROOT")


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else 0.0


async def lag(url: str, root: Path, rate: int, seconds: float, ship_ms: int) -> dict[str, Any]:
    identity = Identity.from_phrase(generate_phrase())
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(4096, 64)).astype(np.float32)
    async with store(url, identity, root / "lag-w") as ws, store(url, identity, root / "lag-f") as fs:
        writer = await Database.open(root / "lag-w", ENGINE, ws, storage_mode="portal",
                                     replication=ReplicationConfig(ship_interval_ms=ship_ms))
        try:
            await writer.create_collection(CollectionConfig("c", 64))
            await writer.upsert("c", [RawItem("first", vectors[0], {})])
            follower = await Follower.open(root / "lag-f", ENGINE, fs, ReplicationConfig(role="follower"),
                                           events=EventBus(), storage_mode="portal")
            tail = asyncio.create_task(follower.run())
            marks: list[tuple[float, int]] = []  # (when the writer had applied it, LSN)
            lags: list[float] = []
            tasks: list[asyncio.Task[Any]] = []
            began = time.perf_counter()
            next_mark = began
            count = int(rate * seconds)
            for i in range(count):
                due = began + i / rate
                while (now := time.perf_counter()) < due:
                    await asyncio.sleep(min(due - now, 0.002))
                tasks.append(asyncio.create_task(writer.upsert("c", [RawItem(f"r{i}", vectors[i % 4096], {})])))
                if now >= next_mark:
                    marks.append((now, writer.applied_lsn))
                    next_mark = now + 0.05
                    applied = follower.db.applied_lsn
                    while marks and marks[0][1] <= applied:
                        lags.append(now - marks.pop(0)[0])
            await asyncio.gather(*tasks)
            achieved = count / (time.perf_counter() - began)
            marks.append((time.perf_counter(), writer.applied_lsn))  # wait for the very last write too
            async with asyncio.timeout(30):
                while marks:
                    now = time.perf_counter()
                    applied = follower.db.applied_lsn
                    while marks and marks[0][1] <= applied:
                        lags.append(now - marks.pop(0)[0])
                    await asyncio.sleep(0.02)
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)
            caught_up = len(follower.db.collection("c")) == len(writer.collection("c"))
            await follower.close()
        finally:
            await writer.close(checkpoint=False)
    return {"offered_per_s": rate, "achieved_per_s": round(achieved, 1), "samples": len(lags),
            "lag_p50_s": pct(lags, 50), "lag_p99_s": pct(lags, 99), "lag_max_s": round(max(lags), 3),
            "ship_interval_ms": ship_ms, "follower_has_every_record": caught_up}


async def ready(url: str, root: Path, count: int) -> dict[str, Any]:
    identity = Identity.from_phrase(generate_phrase())
    base = np.load(default_data_dir() / "base.f16.npy", mmap_mode="r")[:count].astype(np.float32)
    count -= 1000  # the last 1,000 go in after the checkpoint
    async with store(url, identity, root / "big-w") as ws:
        writer = await Database.open(root / "big-w", ENGINE, ws, storage_mode="portal",
                                     replication=ReplicationConfig())
        try:
            await writer.create_collection(CollectionConfig("c", base.shape[1]))
            started = time.perf_counter()
            for start in range(0, count, 5000):
                await writer.upsert("c", [RawItem(f"v{i}", base[i], {"i": i}) for i in range(start, min(count, start + 5000))])
            loaded = time.perf_counter() - started
            started = time.perf_counter()
            await writer.checkpoint()
            checkpointed = time.perf_counter() - started
            await writer.upsert("c", [RawItem(f"v{i}", base[i], {"i": i}) for i in range(count, count + 1000)])
            assert writer._shipper is not None
            async with asyncio.timeout(60):
                while writer._shipper.shipped_lsn < writer.applied_lsn:
                    await asyncio.sleep(0.05)
            async with store(url, identity, root / "big-f") as fs:
                began = time.perf_counter()
                follower = await Follower.open(root / "big-f", ENGINE, fs, ReplicationConfig(role="follower"),
                                               events=EventBus(), storage_mode="portal")
                ready_s = time.perf_counter() - began
                hits, _ = await follower.db.search("c", base[count + 5], Query(k=1))
                records = len(follower.db.collection("c"))
                await follower.close()
        finally:
            await writer.close(checkpoint=False)
    return {"vectors": count + 1000, "in_manifest": count, "in_shipped_wal_only": 1000,
            "writer_load_s": round(loaded, 1), "checkpoint_s": round(checkpointed, 1),
            "new_follower_ready_s": round(ready_s, 2), "follower_records": records,
            "search_finds_a_shipped_record": bool(hits) and hits[0].id == f"v{count + 5}"}


async def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "s5vec.testing.portal", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        await wait_for_portal(url, proc)
        out: dict[str, Any] = {"lag": await lag(url, root, args.rate, args.seconds, args.ship_interval_ms)}
        print(json.dumps(out), flush=True)
        if args.vectors:
            out["ready"] = await ready(url, root, args.vectors)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.followbench", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ship-interval-ms", type=int, default=1000)
    parser.add_argument("--vectors", type=int, default=100_000, help="0: skip the ready measurement")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="s5vec-followbench-") as tmp:
        summary = asyncio.run(bench(args, Path(tmp)))
    ok = summary["lag"]["follower_has_every_record"] and (
        "ready" not in summary or (summary["ready"]["follower_records"] == summary["ready"]["vectors"]
                                   and summary["ready"]["search_finds_a_shipped_record"]))
    out = {"name": "followers", "command": " ".join(["python -m s5vec_tools.followbench",
                                                     *(argv if argv is not None else sys.argv[1:])]),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
           "seconds": round(time.time() - started, 1), "ok": ok, "summary": summary}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
