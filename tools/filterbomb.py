"""Filter bombs against a running daemon (issue 17, item 5), for RELIABILITY.md.

``python -m s5vec_tools.filterbomb [--out bench-results/reliability/filterbomb.json]``

Starts ``s5vec serve``, loads 20,000 records, then fires the issue's repro at once: four long
legal searches (330 date comparisons per record, no payload index) that fill the search
threads, a depth-17 binary ``$or`` tree (2.6 MB), a 20 MB ``$or`` tree and four searches with
50,000-value ``$in`` lists, while GET by id, ``/health`` and ``/metrics`` are timed in a loop.
Then four more long searches and SIGTERM: seconds until the process exits. Writes
``{"name": "filterbomb", ..., "summary": {...}}`` (the shape :mod:`s5vec_tools.reliability` renders).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from .daemon_proc import Daemon

COLLECTION: Final = "filterbomb"
RECORDS: Final = 20_000
SHUTDOWN_PROMISE_S: Final = 10.0  # README: in-flight requests get at most 10 s after SIGTERM


def or_tree(depth: int) -> bytes:
    """A binary ``$or`` tree of ``depth`` levels as JSON (17: 2.6 MB, 20: 21 MB)."""
    text = '{"g":"x"}'
    for _ in range(depth):
        text = '{"$or":[' + text + "," + text + "]}"
    return text.encode()


def slow_filter(seed: int, leaves: int = 330) -> dict[str, Any]:
    """Under every default limit, but ~1 ms of evaluation per record."""
    return {"$or": [{"t": {"$gt": f"2030-01-{seed % 28 + 1:02d}T00:00:00.{i:06d}"}} for i in range(leaves)]}


def _call(url: str, api_key: str | None, method: str, path: str, body: bytes | None = None,
          timeout: float = 300.0) -> tuple[int, bytes, float]:
    """``(status, body, seconds)``; status 0 when the connection failed."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, data=body, method=method, headers=headers),
                                    timeout=timeout) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except OSError:
        status, payload = 0, b""
    return status, payload, time.perf_counter() - started


def _rss(url: str, api_key: str | None) -> int | None:
    status, text, _ = _call(url, api_key, "GET", "/metrics")
    for line in text.decode(errors="replace").splitlines() if status == 200 else ():
        if line.startswith("s5vec_process_resident_memory_bytes "):
            return int(float(line.split()[1]))
    return None


def seed(url: str, api_key: str | None, records: int = RECORDS) -> None:
    """The collection the bombs aim at: ``records`` records with a date field and no payload index."""
    _call(url, api_key, "POST", "/api/v1/collections", json.dumps({"name": COLLECTION, "dimension": 2}).encode())
    for start in range(0, records, 10_000):
        batch = [{"id": f"r{i}", "vector": [1.0, i / records], "metadata": {"g": f"g{i % 10}", "n": i,
                                                                            "t": "2024-01-01T00:00:00"}}
                 for i in range(start, min(records, start + 10_000))]
        status, body, _ = _call(url, api_key, "POST", f"/api/v1/collections/{COLLECTION}/vectors/batch",
                                json.dumps({"vectors": batch}).encode())
        if status != 200:
            raise RuntimeError(f"seeding failed: {status} {body[:200]!r}")


def _search_body(filter_json: bytes) -> bytes:
    return b'{"vector":[1,0],"k":5,"filter":' + filter_json + b"}"


def long_searches(url: str, api_key: str | None, count: int) -> tuple[list[threading.Thread], list[dict[str, Any]]]:
    """``count`` long legal searches started in threads; each appends ``{status, seconds}``."""
    out: list[dict[str, Any]] = []

    def one(n: int) -> None:
        status, _, seconds = _call(url, api_key, "POST", f"/api/v1/collections/{COLLECTION}/search",
                                   _search_body(json.dumps(slow_filter(n)).encode()))
        out.append({"status": status, "seconds": round(seconds, 3)})

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    return threads, out


def run(url: str, api_key: str | None) -> dict[str, Any]:
    """The repro against the daemon at ``url`` (the collection must be seeded, see :func:`seed`):
    status and time to answer of each bomb, the long searches' statuses, the worst latency of
    GET by id, /health and /metrics meanwhile, and the daemon's RSS before and after."""
    rss_before = _rss(url, api_key)
    searches, search_results = long_searches(url, api_key, 4)
    time.sleep(0.3)  # let them reach the search threads (a benchmark, not a test: a fixed lead is fine)
    in_list = json.dumps({"g": {"$in": [f"v{i}" for i in range(50_000)]}}).encode()
    bombs = [("or_tree_depth_17", or_tree(17))] + [("or_tree_20mb", or_tree(20))] + \
        [(f"in_50000_{n}", in_list) for n in range(4)]
    bomb_results: dict[str, dict[str, Any]] = {}

    def fire(name: str, filter_json: bytes) -> None:
        body = _search_body(filter_json)
        status, payload, seconds = _call(url, api_key, "POST", f"/api/v1/collections/{COLLECTION}/search", body)
        try:
            message = json.loads(payload)["error"]["message"] if status >= 400 else ""
        except (ValueError, KeyError, TypeError):
            message = payload[:200].decode(errors="replace")
        bomb_results[name] = {"bytes": len(filter_json), "status": status, "seconds": round(seconds, 3),
                              "message": message}

    latencies: dict[str, list[float]] = {"get_by_id": [], "health": [], "metrics": []}
    paths = {"get_by_id": f"/api/v1/collections/{COLLECTION}/vectors/r7", "health": "/health", "metrics": "/metrics"}
    failures: list[str] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            for kind, path in paths.items():
                status, _, seconds = _call(url, api_key, "GET", path, timeout=120)
                latencies[kind].append(seconds)
                if status != 200:
                    failures.append(f"{kind}: {status}")

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    firing = [threading.Thread(target=fire, args=bomb, daemon=True) for bomb in bombs]
    for thread in firing:
        thread.start()
    for thread in firing + searches:
        thread.join()
    done.set()
    prober.join()
    rss_after = _rss(url, api_key)
    return {
        "bombs": bomb_results,
        "bombs_refused_400": sum(1 for b in bomb_results.values() if b["status"] == 400),
        "slowest_refusal_s": max(b["seconds"] for b in bomb_results.values()),
        "long_searches": sorted(r["status"] for r in search_results),
        "long_search_max_s": max((r["seconds"] for r in search_results), default=None),
        "concurrent_reads": {kind: {"requests": len(values), "max_ms": round(max(values, default=0) * 1000, 1),
                                    "p50_ms": round(sorted(values)[len(values) // 2] * 1000, 1) if values else None}
                             for kind, values in latencies.items()},
        "read_failures": failures[:10],
        "rss_before_mb": round(rss_before / 2**20, 1) if rss_before else None,
        "rss_after_mb": round(rss_after / 2**20, 1) if rss_after else None,
    }


def sigterm_during_searches(daemon: Daemon, api_key: str | None) -> dict[str, Any]:
    """Four long searches in flight, then SIGTERM: seconds until the process exits."""
    _, results = long_searches(daemon.url, api_key, 4)
    time.sleep(0.3)
    seconds = daemon.stop(timeout=120)
    return {"sigterm_to_exit_s": round(seconds, 2), "exit_code": daemon.proc.returncode if daemon.proc else None,
            "within_promise": seconds <= SHUTDOWN_PROMISE_S, "searches_answered": sorted(r["status"] for r in results)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.filterbomb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results/reliability/filterbomb.json"))
    args = parser.parse_args(argv)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="s5vec-filterbomb-"))
    daemon = Daemon(work / "data", work / "daemon.log")
    try:
        daemon.start()
        daemon.wait_status("/ready")
        seed(daemon.url, None)
        summary = run(daemon.url, None)
        summary.update(sigterm_during_searches(daemon, None))
    finally:
        daemon.kill()
        shutil.rmtree(work, ignore_errors=True)
    ok = (summary["bombs_refused_400"] == len(summary["bombs"]) and not summary["read_failures"]
          and summary["within_promise"] and summary["exit_code"] == 0)
    result = {"name": "filterbomb", "command": " ".join(["python -m s5vec_tools.filterbomb", *(argv or sys.argv[1:])]),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "seconds": round(time.time() - started, 1), "ok": ok, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
