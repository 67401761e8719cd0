"""The over-HTTP part of the benchmark: daemon start, ingest, indexing, search, memory, restart.

The daemon runs as a subprocess; load comes from :mod:`s5vec_tools.http_load` in another
subprocess, so neither shares a GIL with this orchestrator (which only polls). The control
requests here (create, poll, checkpoint, the searches after a restart) go through the
Python client, :class:`s5vec.client.Client`; the load generator keeps raw aiohttp with
bodies encoded before the clock starts, so the numbers measure the daemon, not a client.
Cross-process instants use ``time.monotonic`` (CLOCK_MONOTONIC, shared by all processes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from s5vec.client import Client, NotFound, S5vecError

from .daemon_proc import Daemon, DaemonError
from .dataset import Dataset, recall_at_k
from .stats import proc_status_bytes, rss_bytes

COLLECTION = "bench"
K = 10


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _load_subprocess(mode: str, args: list[str], out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "s5vec_tools.http_load", mode, "--out", str(out), *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout.splitlines():
        log(line)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator ({mode}) failed with code {proc.returncode}")
    return json.loads(out.read_text())


def _search_once(client: Client, query: np.ndarray, ef: int | None = None) -> list[int]:
    """Row numbers of the top K (ids are rows)."""
    return [int(i) for i in client.search(COLLECTION, query, K, ef=ef, include_metadata=False).ids]


def _wait_indexed(client: Client, expected: int, timeout: float) -> tuple[float, dict[str, Any]]:
    """Poll the collection until ``pending`` is 0 and ``count`` is ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        info = client.get_collection(COLLECTION).stats
        now = time.monotonic()
        if info.get("pending", 1) == 0 and info.get("count") == expected:
            return now, info
        if now > deadline:
            raise DaemonError(f"indexing not finished after {timeout:.0f}s: {info}")
        time.sleep(0.05)


def run_http(ds: Dataset, workdir: Path, efs: Sequence[int], clients: int, min_time: float,
             log: Callable[[str], None] = print, index_timeout: float = 1800.0,
             result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every HTTP phase against a fresh daemon in ``workdir``.

    Numbers go into ``result`` as they are measured (so a failure keeps what came
    before); it is also returned.
    """
    result = {} if result is None else result
    result.setdefault("notes", [])
    workdir.mkdir(parents=True, exist_ok=True)
    gt_path = workdir / "gt.npy"
    np.save(gt_path, ds.gt[:, :K])
    daemon = Daemon(workdir / "data", workdir / "daemon.log")
    result["daemon_command"] = " ".join(daemon.command())
    result["data_dir"] = str(daemon.data_dir)
    n = len(ds.base)
    common = ["--url", daemon.url, "--collection", COLLECTION, "--data", str(ds.path)]
    control = Client(daemon.url, timeout=600.0)
    try:
        # ------------------------------------------------------------ start + create
        spawned = daemon.start()
        ready_at, _ = daemon.wait_status("/health", timeout=60.0)
        result["cold_start_s"] = ready_at - spawned
        log(f"[http] daemon pid {daemon.pid} on {daemon.url}, /health after {result['cold_start_s']:.2f}s")
        control.create_collection(COLLECTION, ds.dimension, "cosine")
        result["rss_empty_bytes"] = rss_bytes(daemon.pid)

        # ------------------------------------------------------------------- ingest
        log(f"[http] ingesting {n} vectors: batches of 1000, 4 requests in flight (bodies pre-encoded)")
        ingest = _load_subprocess("ingest", [*common, "--limit", str(n), "--batch", "1000", "--concurrency", "4"],
                                  workdir / "ingest.json", log)
        ingest_end = float(ingest.pop("end_monotonic"))  # CLOCK_MONOTONIC in the load process
        if ingest["vectors_failed"] or ingest["vectors_acked"] != n:
            raise DaemonError(f"ingest: acked {ingest['vectors_acked']}/{n}, failed {ingest['vectors_failed']}: "
                              f"{ingest['problems']}")
        log(f"  acked {ingest['vectors_acked']} in {ingest['elapsed_s']:.2f}s = {ingest['vectors_per_s']:.0f} vectors/s"
            f" (batch p50 {ingest['batch_latency']['p50_ms']:.0f}ms, p99 {ingest['batch_latency']['p99_ms']:.0f}ms,"
            f" retries {ingest['retries']})")
        indexed_at, info = _wait_indexed(control, n, index_timeout)
        ingest["ingest_end_to_indexed_s"] = indexed_at - ingest_end
        ingest["first_write_to_indexed_s"] = ingest["elapsed_s"] + ingest["ingest_end_to_indexed_s"]
        ingest["collection_after"] = info
        result["ingest"] = ingest
        log(f"  indexed {ingest['ingest_end_to_indexed_s']:.2f}s after the last ack "
            f"({ingest['first_write_to_indexed_s']:.2f}s after the first write)")
        result["rss_indexed_bytes"] = rss_bytes(daemon.pid)
        result["rss_peak_bytes"] = proc_status_bytes(daemon.pid, "VmHWM")

        # ------------------------------------------------------------------- search
        runs = [f"{ef}x{clients}" for ef in efs] + ["defaultx1"]
        log(f"[http] search: {len(ds.queries)} queries, runs {','.join(runs)}, >= {min_time:.1f}s each, "
            f"load generator in its own process")
        search = _load_subprocess("search", [*common, "--queries", str(len(ds.queries)), "--gt", str(gt_path),
                                             "--runs", ",".join(runs), "--min-time", str(min_time),
                                             "--daemon-pid", str(daemon.pid)],
                                  workdir / "search.json", log)
        result["search"] = search["runs"]
        for row in result["search"]:
            if row["errors"]:
                result["notes"].append(f"search ef={row['ef']} clients={row['clients']}: {row['errors']} errors, "
                                       f"e.g. {row['error_samples'][:1]}")
        result["rss_after_search_bytes"] = rss_bytes(daemon.pid)

        # ------------------------------------------------------------------ restart
        result["restart"] = _restart(daemon, control, ds, efs, result["notes"], log)
    finally:
        control.close()
        daemon.kill()
    return result


def _restart(daemon: Daemon, control: Client, ds: Dataset, efs: Sequence[int], notes: list[str],
             log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t = time.perf_counter()
    try:
        body = control.checkpoint()
    except NotFound:
        out["checkpoint_status"] = 404
        notes.append("POST /api/v1/admin/checkpoint -> 404: checkpoint skipped, restart replays the WAL")
        log("  note: POST /api/v1/admin/checkpoint -> 404, skipping the explicit checkpoint")
    except S5vecError as exc:
        out["checkpoint_status"] = exc.status
        notes.append(f"POST /api/v1/admin/checkpoint -> {exc}")
    else:
        out["checkpoint_status"] = 200
        out["checkpoint_s"] = time.perf_counter() - t
        out["checkpoint_reply"] = body
    out["shutdown_s"] = daemon.stop()
    out["shutdown_exit_code"] = daemon.proc.returncode if daemon.proc else None
    out["data_dir_bytes"] = _dir_bytes(daemon.data_dir)
    if out["shutdown_exit_code"] not in (0, None):
        notes.append(f"daemon exited with code {out['shutdown_exit_code']} on SIGTERM")

    spawned = daemon.start()
    ready_at, status = daemon.wait_status("/ready", timeout=600.0)
    out["ready_path"] = "/ready"
    if status == 404:
        notes.append("GET /ready -> 404: used /health for restart-to-ready")
        ready_at, _ = daemon.wait_status("/health", timeout=600.0)
        out["ready_path"] = "/health"
    out["spawn_to_ready_s"] = ready_at - spawned
    query = ds.queries[0]
    with Client(daemon.url, timeout=600.0, retries=0) as client:  # polls itself: no backoff in the timing
        while True:
            try:
                _search_once(client, query)
                break
            except S5vecError as exc:
                if time.perf_counter() - spawned > 600:
                    raise DaemonError(f"search after restart kept failing: {exc}") from None
                time.sleep(0.01)
        out["spawn_to_first_search_s"] = time.perf_counter() - spawned
        out["rss_after_restart_bytes"] = rss_bytes(daemon.pid)
        info = client.get_collection(COLLECTION).stats
        out["collection_after_restart"] = info
        if info.get("count") != len(ds.base):
            notes.append(f"after restart GET /api/v1/collections/{COLLECTION}: {info}")
        # Sanity: the restored graph answers as well as before (sequential, a few hundred queries).
        ef = 64 if 64 in efs else efs[-1]
        sample = min(len(ds.queries), 200)
        ids = [_search_once(client, q, ef) for q in ds.queries[:sample]]
    out["recall_check"] = {"ef": ef, "queries": sample, f"recall@{K}": recall_at_k(ids, ds.gt[:sample], K)}
    log(f"[http] restart: checkpoint {out.get('checkpoint_s', float('nan')):.2f}s, shutdown {out['shutdown_s']:.2f}s, "
        f"spawn->ready {out['spawn_to_ready_s']:.2f}s, spawn->first search {out['spawn_to_first_search_s']:.2f}s, "
        f"recall@{K} after restart (ef={ef}, {sample} q) {out['recall_check'][f'recall@{K}']:.4f}")
    out["shutdown2_s"] = daemon.stop()
    return out
