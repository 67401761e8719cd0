"""Bounded soak: mixed read/write/subscribe load on one ``s5vec serve`` for N minutes.

``python -m s5vec_tools.soak --minutes 10 --out bench-results/reliability/soak.json``

The daemon runs as a subprocess on a temporary data directory; load comes from separate
processes on loopback (no shared GIL with the daemon or with each other):

* writers: single upserts, batch upserts and deletes over a fixed id space, so after the
  preload the data set stays the same size and memory growth measures leaks, not data;
* readers: searches with and without a metadata filter, and gets by id;
* WebSocket subscribers: a change feed (``subscribe``) plus a standing query
  (``subscribe_query``) that is replaced every few seconds (subscription churn);
* an SSE reader on ``/api/v1/stream/updates``.

Every ``--interval`` seconds the orchestrator samples the daemon's RSS (VmRSS of
/proc/PID/status) and the counts the workers sent. After the warm-up (the first
``--warmup`` fraction of the run) the RSS must grow less than 5 % (the floor of the last
third of the samples after warm-up against the floor of their first third, see
:func:`memory_growth`; a floor is the 10th percentile), and the error rate of the last
third must not be above the first third's. The memory check is only enforced for runs of
``MIN_MEMORY_CHECK_S`` or longer: shorter runs report it but cannot judge a trend.

Two daemon settings are changed (``SOAK_CONFIG``) so that bounded-by-design memory reaches
its bound during the warm-up instead of reading as growth: the retained event window is
small (its default, 100,000 events / 64 MiB, would still be filling at the end), and the
compaction job runs every 30 s and rebuilds a graph past 10 % tombstones instead of every
10 minutes past 50 % (an overwrite leaves a tombstone in the recent tier's graph until
compaction rebuilds it: by default a saw-tooth of some 100 MiB whose period is most of the
run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from .daemon_proc import Daemon, DaemonError, parse_settings
from .dataset import default_data_dir
from .stats import cpu_seconds, machine_info, rss_bytes

COLLECTION: Final = "soak"
DIMENSION: Final = 384
CATEGORIES: Final = 8
MAX_GROWTH: Final = 0.05
ERROR_RATE_SLACK: Final = 0.001  # one stray error in a thousand is not a "creeping" error rate
MIN_MEMORY_CHECK_S: Final = 300.0
REPORT_S: Final = 1.0  # how often a worker sends its counts
SOAK_CONFIG: Final = ("[events]\nwindow_events = 5000\nwindow_bytes = 8388608\nheartbeat_s = 5.0\n"
                      "[jobs]\ncompact_interval_s = 30.0\ntombstone_ratio = 0.1\n")
DATA: Final = default_data_dir()


# ------------------------------------------------------------------ checks (pure)
FLOOR_QUANTILE: Final = 0.1


def _floor(values: Sequence[float]) -> float:
    """The level a saw-tooth returns to: the 10th percentile, not the minimum, since one
    sample taken while a compaction had freed the old tier and not yet filled the new one
    can sit 60 MiB below every trough around it (30-minute soak: 158.7 MiB among troughs
    of 233-250), and one such dip in either third would decide the verdict."""
    ordered = sorted(values)
    return ordered[int((len(ordered) - 1) * FLOOR_QUANTILE)]


def memory_growth(rss: Sequence[float], warmup_fraction: float) -> dict[str, Any]:
    """Growth of ``rss`` (samples in time order) after warm-up: the floor (:func:`_floor`)
    of the last third of the samples after the first ``warmup_fraction`` of them against
    the floor of their first third. Floors, because compaction makes RSS a saw-tooth (a
    rebuilt graph briefly lives next to the old one): a leak raises the floor, a saw-tooth
    does not. Returns ``{"baseline", "end", "max", "growth", "mean_growth", "min_growth"}``
    (fractions; None if too few samples); ``mean_growth`` compares the thirds' means and
    ``min_growth`` their minima, for information."""
    values = [float(v) for v in rss if v]
    after = values[int(len(values) * warmup_fraction):]
    if len(after) < 6:
        return {"baseline": None, "end": None, "max": max(values) if values else None, "growth": None,
                "mean_growth": None, "min_growth": None}
    third = len(after) // 3
    first, last = after[:third], after[-third:]
    baseline, end = _floor(first), _floor(last)
    return {"baseline": baseline, "end": end, "max": max(after), "growth": end / baseline - 1.0,
            "mean_growth": statistics.fmean(last) / statistics.fmean(first) - 1.0,
            "min_growth": min(last) / min(first) - 1.0}


def error_rates(ops: Sequence[int], errors: Sequence[int]) -> tuple[float, float]:
    """``(first third, last third)`` error rates (errors / (ops + errors)) of a series."""
    n = len(ops)
    third = max(n // 3, 1)

    def rate(lo: int, hi: int) -> float:
        total = sum(ops[lo:hi]) + sum(errors[lo:hi])
        return sum(errors[lo:hi]) / total if total else 0.0

    return rate(0, third), rate(n - third, n)


def checks(series: Sequence[dict[str, Any]], warmup_fraction: float, seconds: float,
           max_growth: float = MAX_GROWTH) -> dict[str, Any]:
    """The pass/fail verdicts of a run's ``series`` (see module docstring)."""
    growth = memory_growth([s["rss_bytes"] or 0 for s in series], warmup_fraction)
    first, last = error_rates([s["ops"] for s in series], [s["errors"] for s in series])
    enforced = seconds >= MIN_MEMORY_CHECK_S
    memory_ok = growth["growth"] is not None and growth["growth"] < max_growth
    return {
        "memory": {**growth, "limit": max_growth, "ok": memory_ok, "enforced": enforced},
        "error_rate": {"first_third": first, "last_third": last, "ok": last <= first + ERROR_RATE_SLACK},
    }


# ------------------------------------------------------------------ workers
class Tally:
    """Counts and latencies since the last report of one worker."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ops: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.latency: dict[str, list[float]] = {}
        self.events = {"ws_events": 0, "ws_matches": 0, "sse_events": 0, "notices": 0}
        self.samples: list[str] = []

    def ok(self, op: str, seconds: float) -> None:
        self.ops[op] = self.ops.get(op, 0) + 1
        self.latency.setdefault(op, []).append(seconds * 1000.0)

    def fail(self, op: str, what: str) -> None:
        self.errors[op] = self.errors.get(op, 0) + 1
        if len(self.samples) < 5:
            self.samples.append(f"{op}: {what}"[:300])

    def flush(self, out: Any, worker: str) -> None:
        out.put({"worker": worker, "t": time.time(), "ops": self.ops, "errors": self.errors,
                 "latency": self.latency, "events": self.events, "samples": self.samples})
        self.reset()


def _vectors() -> np.ndarray:
    base: np.ndarray = np.load(DATA / "base.f16.npy", mmap_mode="r")
    return base


def _queries() -> np.ndarray:
    queries: np.ndarray = np.load(DATA / "queries.f16.npy").astype(np.float32)
    return queries


def _record(rid: int, vec: np.ndarray, stamp: int) -> dict[str, Any]:
    return {"id": str(rid), "vector": vec.astype(np.float32).tolist(),
            "metadata": {"cat": f"c{rid % CATEGORIES}", "n": rid, "stamp": stamp}}


async def _timed(session: Any, tally: Tally, op: str, method: str, url: str, body: Any = None,
                 allowed: tuple[int, ...] = ()) -> None:
    started = time.perf_counter()
    try:
        async with session.request(method, url, json=body) as resp:
            await resp.read()
            if resp.status < 300 or resp.status in allowed:
                tally.ok(op, time.perf_counter() - started)
            else:
                tally.fail(op, f"HTTP {resp.status}")
    except Exception as exc:  # noqa: BLE001 - every failure counts as an error
        tally.fail(op, f"{type(exc).__name__}: {exc}")


async def _writer(url: str, ids: int, tally: Tally, stop: float, seed: int) -> None:
    import aiohttp
    rng, base = random.Random(seed), _vectors()
    api = f"{url}/api/v1/collections/{COLLECTION}"
    async with aiohttp.ClientSession() as session:
        while time.time() < stop:
            roll, stamp = rng.random(), int(time.time())
            if roll < 0.5:
                rid = rng.randrange(ids)
                await _timed(session, tally, "upsert", "POST", f"{api}/vectors",
                             _record(rid, base[rng.randrange(len(base))], stamp))
            elif roll < 0.85:
                batch = [_record(rng.randrange(ids), base[rng.randrange(len(base))], stamp) for _ in range(50)]
                await _timed(session, tally, "upsert_batch", "POST", f"{api}/vectors/batch", {"vectors": batch})
            else:
                doomed = [str(rng.randrange(ids)) for _ in range(5)]
                await _timed(session, tally, "delete", "POST", f"{api}/vectors/delete", {"ids": doomed})


async def _reader(url: str, ids: int, tally: Tally, stop: float, seed: int) -> None:
    import aiohttp
    rng, queries = random.Random(seed), _queries()
    api = f"{url}/api/v1/collections/{COLLECTION}"
    async with aiohttp.ClientSession() as session:
        while time.time() < stop:
            roll, query = rng.random(), queries[rng.randrange(len(queries))].tolist()
            if roll < 0.4:
                await _timed(session, tally, "search", "POST", f"{api}/search", {"vector": query, "k": 10})
            elif roll < 0.7:
                body = {"vector": query, "k": 10, "filter": {"cat": f"c{rng.randrange(CATEGORIES)}"}}
                await _timed(session, tally, "search_filtered", "POST", f"{api}/search", body)
            else:  # a deleted id is a legitimate 404
                await _timed(session, tally, "get", "GET", f"{api}/vectors/{rng.randrange(ids)}", allowed=(404,))


async def _ws_subscriber(url: str, tally: Tally, stop: float, seed: int) -> None:
    import aiohttp
    rng, queries = random.Random(seed), _queries()
    pending: dict[str, tuple[str, float]] = {}
    confirmed: set[str] = set()  # requests of a connection run concurrently: unsubscribe only what is set up
    counter = 0

    def send(ws: Any, op: str, frame: dict[str, Any]) -> Any:
        nonlocal counter
        counter += 1
        frame["id"] = mid = f"{op}-{counter}"
        pending[mid] = (op, time.perf_counter())
        return ws.send_str(json.dumps(frame))

    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/api/v1/ws", heartbeat=30) as ws:
        await send(ws, "subscribe", {"type": "subscribe", "collections": [COLLECTION], "sub": "feed"})
        await send(ws, "subscribe_query", {"type": "subscribe_query", "collection": COLLECTION,
                                           "vector": queries[0].tolist(), "k": 10, "sub": "q0"})
        query_no, churn_at = 0, time.time() + 5.0
        while time.time() < stop:
            if time.time() >= churn_at and f"q{query_no}" in confirmed:  # subscription churn
                await send(ws, "unsubscribe", {"type": "unsubscribe", "sub": f"q{query_no}"})
                query_no += 1
                await send(ws, "subscribe_query", {"type": "subscribe_query", "collection": COLLECTION,
                                                   "vector": queries[rng.randrange(len(queries))].tolist(),
                                                   "k": 10, "sub": f"q{query_no}"})
                await send(ws, "ping", {"type": "ping"})
                churn_at = time.time() + 5.0
            try:
                msg = await ws.receive(timeout=1.0)
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                tally.fail("ws", f"socket ended: {msg.type.name} {ws.close_code}")
                return
            frame = json.loads(msg.data)
            kind = frame.get("type")
            if kind == "events":
                tally.events["ws_events"] += len(frame["events"])
            elif kind == "matches":
                tally.events["ws_matches"] += len(frame["matches"])
            elif kind in ("lagged", "missed", "ahead"):
                tally.events["notices"] += 1
            elif kind == "error":
                op, _ = pending.pop(frame.get("id"), ("ws", 0.0))
                tally.fail(op, json.dumps(frame["error"]))
            elif frame.get("id") in pending:
                op, sent = pending.pop(frame["id"])
                tally.ok(op, time.perf_counter() - sent)
                if kind == "subscribed":
                    confirmed.add(frame["sub"])


async def _sse_reader(url: str, tally: Tally, stop: float, seed: int) -> None:
    import aiohttp
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        async with session.get(f"{url}/api/v1/stream/updates", params={"collection": COLLECTION}) as resp:
            if resp.status != 200:
                tally.fail("sse", f"HTTP {resp.status}")
                return
            tally.ok("sse_connect", time.perf_counter() - started)
            while time.time() < stop:
                try:
                    line = await asyncio.wait_for(resp.content.readline(), 1.0)
                except TimeoutError:
                    continue
                if not line:
                    tally.fail("sse", "stream ended")
                    return
                if line.startswith(b"data:"):
                    tally.events["sse_events"] += 1
                elif line.startswith((b"event: disconnected", b"event: going_away")):
                    tally.fail("sse", line.decode().strip())


ROLES: Final = {"writer": _writer, "reader": _reader, "ws": _ws_subscriber, "sse": _sse_reader}


def worker_main(role: str, name: str, url: str, ids: int, go: Any, stop_at: Any, seed: int, out: Any) -> None:
    """Entry point of one load process: say ``ready``, wait for ``go``, then run ``role``
    until ``stop_at.value`` (epoch seconds), sending a :class:`Tally` to ``out`` every
    REPORT_S seconds and once at the end."""
    import aiohttp  # noqa: F401 - imported before "ready" so the clock does not time imports
    _vectors(), _queries()
    tally = Tally()
    out.put({"worker": name, "ready": True})
    if not go.wait(300):
        return
    stop = stop_at.value

    async def main() -> None:
        async def report() -> None:
            while True:
                await asyncio.sleep(REPORT_S)
                tally.flush(out, name)

        reporter = asyncio.create_task(report())
        try:
            fn = ROLES[role]
            args = (url, ids, tally, stop, seed) if role in ("writer", "reader") else (url, tally, stop, seed)
            await fn(*args)  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - a crashed worker is an error of the run
            tally.fail(role, f"worker crashed: {type(exc).__name__}: {exc}")
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            tally.flush(out, name)
            out.put({"worker": name, "done": True})

    asyncio.run(main())


# ------------------------------------------------------------------ orchestration
def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None}
    arr = np.asarray(values)
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p99_ms": round(float(np.percentile(arr, 99)), 3)}


def _preload(daemon: Daemon, ids: int) -> None:
    status, body = daemon.request("POST", "/api/v1/collections",
                                  {"name": COLLECTION, "dimension": DIMENSION, "payload_indexes": {"cat": "keyword"}})
    if status != 201:
        raise DaemonError(f"creating the collection: HTTP {status} {body}")
    base = _vectors()
    for lo in range(0, ids, 500):
        batch = [_record(i, base[i], 0) for i in range(lo, min(lo + 500, ids))]
        status, body = daemon.request("POST", f"/api/v1/collections/{COLLECTION}/vectors/batch", {"vectors": batch})
        if status != 200 or body.get("failed"):
            raise DaemonError(f"preload: HTTP {status} {str(body)[:300]}")


class SoakDaemon(Daemon):
    """The benchmark daemon with the soak's config file."""

    def __init__(self, data_dir: Path, log_path: Path, config: Path, settings: dict[str, str] | None = None) -> None:
        super().__init__(data_dir, log_path, settings=settings)
        self.config = config

    def command(self) -> list[str]:
        return [*super().command(), "--config", str(self.config)]


def run_soak(seconds: float, interval: float = 5.0, warmup: float = 0.3, writers: int = 2, readers: int = 2,
             subscribers: int = 2, sse: int = 1, ids: int = 10_000, workdir: Path | None = None,
             progress: bool = True, settings: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the soak; returns the report (see module docstring). Raises DaemonError if the
    daemon cannot be started or the collection cannot be preloaded."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="s5vec-soak-", dir=workdir) as tmp:
        config = Path(tmp) / "soak.toml"
        config.write_text(SOAK_CONFIG)
        daemon = SoakDaemon(Path(tmp) / "data", Path(tmp) / "daemon.log", config, settings)
        daemon.start()
        try:
            daemon.wait_status("/ready", 200, timeout=120)
            _preload(daemon, ids)
            report = _drive(daemon, seconds, interval, warmup, writers, readers, subscribers, sse, ids, progress)
            report["daemon_exit"] = {"stop_s": round(daemon.stop(), 3), "code": daemon.proc.returncode if daemon.proc else None}
            report["daemon_log_tail"] = daemon.log_tail(15) if not report["ok"] else ""
        finally:
            daemon.kill()
    report["started"] = started_at
    return report


def _drive(daemon: Daemon, seconds: float, interval: float, warmup: float, writers: int, readers: int,
           subscribers: int, sse: int, ids: int, progress: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    plan = ([("writer", f"writer-{i}") for i in range(writers)] + [("reader", f"reader-{i}") for i in range(readers)]
            + [("ws", f"ws-{i}") for i in range(subscribers)] + [("sse", f"sse-{i}") for i in range(sse)])
    go, stop_at = ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=worker_main, args=(role, name, daemon.url, ids, go, stop_at, 1000 + i, out),
                         name=name, daemon=True) for i, (role, name) in enumerate(plan)]
    for proc in procs:
        proc.start()
    ready: set[str] = set()
    deadline = time.time() + 300
    while len(ready) < len(procs) and time.time() < deadline:  # the clock starts once all are loaded
        try:
            ready.add(out.get(timeout=1.0)["worker"])
        except queue.Empty:
            if not all(proc.is_alive() for proc in procs):
                break
    start = time.time()
    stop = stop_at.value = start + seconds
    go.set()
    series: list[dict[str, Any]] = []
    totals: dict[str, dict[str, Any]] = {}
    done: set[str] = set()
    reported: set[str] = set()
    samples: list[str] = []
    bucket = _new_bucket()
    next_tick = start + interval
    rss_start = rss_bytes(daemon.pid)  # after the preload, before the load
    cpu_start = cpu_seconds(daemon.pid) or 0.0
    while len(done) < len(procs):
        try:
            msg = out.get(timeout=0.2)
        except queue.Empty:
            msg = None
        if msg is not None:
            if msg.get("done"):
                done.add(msg["worker"])
            else:
                _add(bucket, msg, totals)
                if sum(msg["ops"].values()):
                    reported.add(msg["worker"])
                samples.extend(msg["samples"][: max(0, 20 - len(samples))])
        now = time.time()
        if now >= next_tick and now < stop + interval:
            series.append(_close_bucket(bucket, now - start, interval, rss_bytes(daemon.pid)))
            if progress:
                s = series[-1]
                print(f"  t={s['t']:6.0f}s ops/s={s['ops_per_s']:8.1f} p99={s['p99_ms']}ms errors={s['errors']} "
                      f"rss={(s['rss_bytes'] or 0) / 2**20:.1f}MiB", file=sys.stderr, flush=True)
            bucket = _new_bucket()
            next_tick += interval
        if now > stop + 60:
            break
        if daemon.proc is not None and daemon.proc.poll() is not None:
            samples.append(f"daemon exited with {daemon.proc.returncode}")
            break
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if bucket["ops"] or bucket["errors"]:
        series.append(_close_bucket(bucket, min(time.time(), stop) - start, interval, rss_bytes(daemon.pid)))
    daemon_cpu = (cpu_seconds(daemon.pid) or 0.0) - cpu_start
    return _summarise(series, totals, seconds, warmup, ids, plan, done, reported, samples, rss_start, daemon_cpu)


def _new_bucket() -> dict[str, Any]:
    return {"ops": {}, "errors": 0, "latency": [], "events": {"ws_events": 0, "ws_matches": 0, "sse_events": 0,
                                                               "notices": 0}}


def _add(bucket: dict[str, Any], msg: dict[str, Any], totals: dict[str, dict[str, Any]]) -> None:
    for op, count in msg["ops"].items():
        bucket["ops"][op] = bucket["ops"].get(op, 0) + count
        entry = totals.setdefault(op, {"ops": 0, "errors": 0, "latency": []})
        entry["ops"] += count
        entry["latency"].extend(msg["latency"].get(op, []))
        bucket["latency"].extend(msg["latency"].get(op, []))
    for op, count in msg["errors"].items():
        bucket["errors"] += count
        totals.setdefault(op, {"ops": 0, "errors": 0, "latency": []})["errors"] += count
    for key, count in msg["events"].items():
        bucket["events"][key] += count


def _load_average() -> float | None:
    """The host's 1-minute load average: the daemon shares the CPUs with the load processes
    (and with whatever else runs), so figures are read against it."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _close_bucket(bucket: dict[str, Any], t: float, interval: float, rss: int | None) -> dict[str, Any]:
    ops = sum(bucket["ops"].values())
    return {"t": round(t, 1), "ops": ops, "ops_per_s": round(ops / interval, 1), "errors": bucket["errors"],
            **_percentiles(bucket["latency"]), "by_op": bucket["ops"], "events": bucket["events"],
            "rss_bytes": rss, "load_1m": _load_average()}


def _load_summary(series: list[dict[str, Any]]) -> dict[str, float] | None:
    loads = [s["load_1m"] for s in series if s.get("load_1m") is not None]
    if not loads:
        return None
    return {"mean": round(statistics.fmean(loads), 2), "max": round(max(loads), 2)}


def _summarise(series: list[dict[str, Any]], totals: dict[str, dict[str, Any]], seconds: float,
               warmup: float, ids: int, plan: list[tuple[str, str]], done: set[str], reported: set[str], samples: list[str],
               rss_start: int | None, daemon_cpu: float) -> dict[str, Any]:
    verdict = checks(series, warmup, seconds)
    ops = sum(t["ops"] for t in totals.values())
    errors = sum(t["errors"] for t in totals.values())
    events = {key: sum(s["events"][key] for s in series) for key in ("ws_events", "ws_matches", "sse_events", "notices")}
    all_latency = [v for t in totals.values() for v in t["latency"]]
    workers_ok = len(done) == len(plan) and len(reported) == len(plan)
    events_ok = events["ws_events"] > 0 and events["sse_events"] > 0  # standing-query matches are rare
    memory = verdict["memory"]
    ok = (errors == 0 and workers_ok and events_ok and verdict["error_rate"]["ok"]
          and (memory["ok"] or not memory["enforced"]))
    mib = 1 << 20
    summary = {
        "seconds": seconds,
        "workers": {role: sum(1 for r, _ in plan if r == role) for role in ROLES},
        "workers_finished": len(done), "workers_with_traffic": len(reported),
        "requests": ops, "errors": errors, "throughput_ops_per_s": round(ops / seconds, 1) if seconds else None,
        "latency_ms": _percentiles(all_latency),
        "by_op": {op: {"ops": t["ops"], "errors": t["errors"], "ops_per_s": round(t["ops"] / seconds, 1),
                       **_percentiles(t["latency"])} for op, t in sorted(totals.items())},
        "events_delivered": events,
        "rss_mib": {"start": round((rss_start or 0) / mib, 1),
                    "floor_after_warmup": round(memory["baseline"] / mib, 1) if memory["baseline"] else None,
                    "floor_at_end": round(memory["end"] / mib, 1) if memory["end"] else None,
                    "max": round(memory["max"] / mib, 1) if memory["max"] else None},
        "memory_growth_pct": round(memory["growth"] * 100, 2) if memory["growth"] is not None else None,
        "memory_mean_growth_pct": (round(memory["mean_growth"] * 100, 2) if memory["mean_growth"] is not None
                                   else None),
        "memory_check": ("passed" if memory["ok"] else "FAILED") if memory["enforced"] else
                        f"not enforced (run shorter than {MIN_MEMORY_CHECK_S:.0f} s)",
        "error_rate_first_third": verdict["error_rate"]["first_third"],
        "error_rate_last_third": verdict["error_rate"]["last_third"],
        "error_trend_check": "passed" if verdict["error_rate"]["ok"] else "FAILED",
        "id_space": ids, "warmup_fraction": warmup, "cpus": os.cpu_count(),
        "host_load_1m": _load_summary(series),
        "daemon_cpu_s": round(daemon_cpu, 1),
    }
    return {"ok": ok, "summary": summary, "series": series, "error_samples": samples}


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds run_soak's finally: the daemon and workers stop too


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("bench-results/reliability/soak.json"))
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=0.3, help="fraction of the run that is warm-up")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=2, help="WebSocket subscriber processes")
    parser.add_argument("--sse", type=int, default=1, help="SSE reader processes")
    parser.add_argument("--ids", type=int, default=10_000, help="the fixed id space the writers overwrite")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a daemon setting, e.g. engine.background_nice=0 (repeatable), for A/B runs")
    args = parser.parse_args(argv)
    try:
        settings = parse_settings(args.set)
    except ValueError as exc:
        parser.error(str(exc))
    command = "python -m s5vec_tools.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    began = time.perf_counter()
    report = run_soak(args.minutes * 60, args.interval, args.warmup, args.writers, args.readers, args.subscribers,
                      args.sse, args.ids, settings=settings)
    result = {"name": "soak", "command": command.strip(), "started": report.pop("started"),
              "seconds": round(time.perf_counter() - began, 1), "ok": report.pop("ok"),
              "machine": machine_info(), "daemon_settings": settings, **report}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    s = result["summary"]
    print(f"soak {'ok' if result['ok'] else 'FAILED'}: {s['requests']} requests, {s['throughput_ops_per_s']} ops/s, "
          f"p99 {s['latency_ms']['p99_ms']} ms, {s['errors']} errors, RSS floor {s['rss_mib']['floor_after_warmup']} -> "
          f"{s['rss_mib']['floor_at_end']} MiB ({s['memory_growth_pct']} %, {s['memory_check']}); wrote {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
