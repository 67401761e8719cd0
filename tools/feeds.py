"""``s5vec bench --feeds``: live-feed delivery latency and concurrent WebSocket connections.

Three processes besides this orchestrator, so no two share a GIL: the daemon
(:mod:`.daemon_proc`), a *subscriber* process holding ``--subscribers`` WebSocket
connections each subscribed to the collection, and a *writer* process sending single-record
``upsert`` messages over 4 WebSocket connections at ``--rate`` writes per second for
``--seconds``, paced on a fixed schedule (write i is due at t0 + i / rate).

Latency of one delivery = the moment a subscriber received the event minus the moment the
writer received the write's acknowledgement (both ``time.monotonic``, one clock for every
process on the machine). The daemon publishes right after the commit, so an event can
arrive before its acknowledgement: such deliveries count as negative latency. ``send →
event`` (from the moment the write was sent) is reported as well.

Then a *connections* process opens up to ``--connections`` WebSocket connections (each
subscribes), and one write is fanned out to all of them: the report gives how many were
held and how long the last one took to get the event.

Run ``python -m s5vec_tools.feeds <role> ...`` only through the orchestrator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import numpy as np

from .daemon_proc import Daemon, parse_settings
from .report import finish, mib, table
from .stats import cpu_seconds, machine_info, rss_bytes

COLLECTION = "feeds"
WRITER_CONNECTIONS = 4


class _Record(msgspec.Struct):
    id: str


class _Event(msgspec.Struct):
    record: _Record | None = None


class _Frame(msgspec.Struct):
    type: str
    events: list[_Event] = []


_FRAME = msgspec.json.Decoder(_Frame)


def _raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/api/v1/ws"


async def _subscribe(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url, max_msg_size=0, autoping=True)
    await ws.send_str(json.dumps({"type": "subscribe", "id": 0, "collections": [COLLECTION]}))
    reply = await ws.receive_json(timeout=30)
    if reply.get("type") != "subscribed":
        raise RuntimeError(f"subscribe failed: {reply}")
    return ws


# ------------------------------------------------------------------ roles (subprocesses)
async def _subscribers(args: argparse.Namespace) -> None:
    """Hold N subscriptions; record when each event arrived; stop once every subscriber
    has the number of writes announced on stdin (or after a timeout)."""
    url = _ws_url(args.url)
    capacity = args.max_writes
    received = np.full((args.subscribers, capacity), np.nan)
    counts = [0] * args.subscribers
    frame_counts = [0] * args.subscribers
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = [await _subscribe(session, url) for _ in range(args.subscribers)]

        async def read(k: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            row = received[k]
            async for msg in ws:
                now = time.monotonic()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                frame = _FRAME.decode(msg.data)
                frame_counts[k] += 1
                for event in frame.events:
                    if event.record is not None:
                        seq = int(event.record.id[1:])
                        if seq < capacity and row[seq] != row[seq]:
                            row[seq] = now
                            counts[k] += 1

        readers = [asyncio.create_task(read(k, ws)) for k, ws in enumerate(sockets)]
        cpu_start = time.process_time()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        expected = int(line.strip() or 0)
        deadline = time.monotonic() + 30
        while min(counts) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        cpu = time.process_time() - cpu_start
        frames = sum(frame_counts)
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    np.save(args.out, received)
    Path(str(args.out) + ".json").write_text(json.dumps({"cpu_s": cpu, "frames": frames}))


async def _writer(args: argparse.Namespace) -> None:
    """Single-record upserts at a fixed rate over a few connections; send and ack times."""
    url = _ws_url(args.url)
    total = int(args.rate * args.seconds)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(min(total, 1000), args.dimension)).astype(np.float32)
    messages = [json.dumps({"type": "upsert", "id": i, "collection": COLLECTION,
                            "record": {"id": f"w{i}", "vector": vectors[i % len(vectors)].round(5).tolist()}})
                for i in range(total)]
    sent = np.full(total, np.nan)
    acked = np.full(total, np.nan)
    errors = 0
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url, max_msg_size=0) for _ in range(WRITER_CONNECTIONS)]

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal errors
            async for msg in ws:
                now = time.monotonic()
                reply = json.loads(msg.data)
                if reply.get("type") == "result":
                    acked[reply["id"]] = now
                else:
                    errors += 1

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        cpu_start = time.process_time()
        start = time.monotonic() + 0.1
        for i, message in enumerate(messages):
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.monotonic()
            await sockets[i % WRITER_CONNECTIONS].send_str(message)
        deadline = time.monotonic() + 30
        while np.isnan(acked).any() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - start
        cpu = time.process_time() - cpu_start
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    np.savez(args.out, sent=sent, acked=acked, errors=np.array([errors]), elapsed=np.array([elapsed]),
             cpu=np.array([cpu]))


async def _connections(args: argparse.Namespace) -> None:
    """Open up to N subscribed connections, then fan one write out to all of them."""
    limit = _raise_open_files()
    url = _ws_url(args.url)
    held: list[aiohttp.ClientWebSocketResponse] = []
    failures: list[str] = []
    connector = aiohttp.TCPConnector(limit=0)
    opened_at = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        async def open_one() -> None:
            try:
                held.append(await _subscribe(session, url))
            except (aiohttp.ClientError, OSError, RuntimeError, TimeoutError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

        for start in range(0, args.connections, 50):
            await asyncio.gather(*(open_one() for _ in range(min(50, args.connections - start))))
            if len(failures) > 50:
                break
        open_s = time.monotonic() - opened_at
        got = np.zeros(len(held), bool)
        arrived = np.full(len(held), np.nan)

        async def read(k: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                frame = _FRAME.decode(msg.data)
                if any(e.record is not None and e.record.id == "fanout" for e in frame.events):
                    arrived[k] = time.monotonic()
                    got[k] = True

        readers = [asyncio.create_task(read(k, ws)) for k, ws in enumerate(held)]
        vector = [1.0] + [0.0] * (args.dimension - 1)
        sent = time.monotonic()
        async with session.post(f"{args.url}/api/v1/collections/{COLLECTION}/vectors",
                                json={"id": "fanout", "vector": vector}) as resp:
            acked = time.monotonic()
            assert resp.status == 201, await resp.text()
        deadline = time.monotonic() + 30
        while not got.all() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        report = {"requested": args.connections, "held": len(held), "received_fanout": int(got.sum()),
                  "open_s": open_s, "client_fd_limit": limit, "failures": failures[:5],
                  "fanout_ack_ms": (acked - sent) * 1000,
                  "fanout_last_ms_after_ack": float(np.nanmax(arrived) - acked) * 1000 if got.any() else None,
                  "fanout_p50_ms_after_ack": float(np.nanpercentile(arrived, 50) - acked) * 1000 if got.any() else None}
        for ws in held:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    Path(args.out).write_text(json.dumps(report))


# ------------------------------------------------------------------------ orchestrator
def _role(role: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "s5vec_tools.feeds", role, *args]


def _summary(latencies: np.ndarray) -> dict[str, float]:
    ms = latencies * 1000.0
    return {"count": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean()),
            "negative_fraction": float((ms < 0).mean())}


def run(args: argparse.Namespace, workdir: Path, log: Any) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine_info(), "out": str(args.out), "notes": [],
                               "parameters": {"subscribers": args.subscribers, "rate_per_s": args.rate,
                                              "subscriber_processes": args.subscriber_processes,
                                              "seconds": args.seconds, "dimension": args.dimension,
                                              "connections": args.connections,
                                              "writer_connections": WRITER_CONNECTIONS}}
    results["machine"]["loadavg_start"] = list(os.getloadavg())
    settings = parse_settings(args.set)
    results["parameters"]["daemon_settings"] = settings
    daemon = Daemon(workdir / "data", workdir / "daemon.log", settings=settings)
    daemon.start()
    try:
        daemon.wait_status("/ready")
        definition = {"name": COLLECTION, "dimension": args.dimension, "metric": "cosine"}
        if args.ef_construction:
            definition["hnsw"] = {"ef_construction": args.ef_construction}
        results["parameters"]["collection"] = definition
        status, body = daemon.request("POST", "/api/v1/collections", definition)
        if status != 201:
            raise RuntimeError(f"create collection: {status} {body}")
        total = int(args.rate * args.seconds)
        log(f"phase 1: {args.subscribers} subscribers, {args.rate} writes/s for {args.seconds}s ({total} writes)")
        writer_out = workdir / "writer.npz"
        shares = [len(part) for part in np.array_split(np.arange(args.subscribers), args.subscriber_processes)]
        subs_outs = [workdir / f"received-{n}.npy" for n in range(len(shares))]
        procs = [subprocess.Popen(_role("subscribers", ["--url", daemon.url, "--subscribers", str(share),
                                                        "--max-writes", str(total), "--out", str(out)]),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for share, out in zip(shares, subs_outs)]
        for subs in procs:
            assert subs.stdout is not None and subs.stdin is not None
            if subs.stdout.readline().strip() != "ready":
                raise RuntimeError("subscriber process did not start")
        cpu_before = cpu_seconds(daemon.pid)
        subprocess.run(_role("writer", ["--url", daemon.url, "--rate", str(args.rate), "--seconds",
                                        str(args.seconds), "--dimension", str(args.dimension), "--out",
                                        str(writer_out)]), check=True)
        cpu_after = cpu_seconds(daemon.pid)
        writer = np.load(writer_out)
        acked_count = int(np.isfinite(writer["acked"]).sum())
        for subs in procs:
            assert subs.stdin is not None
            subs.stdin.write(f"{acked_count}\n")
            subs.stdin.flush()
        for subs in procs:
            subs.wait(120)
        received = np.concatenate([np.load(out) for out in subs_outs])
        np.save(workdir / "received.npy", received)
        sub_stats = [json.loads(Path(str(out) + ".json").read_text()) for out in subs_outs]
        sent, acked = writer["sent"], writer["acked"]
        deliveries = received[:, np.isfinite(acked)]
        after_ack = (received - acked[None, :])[:, np.isfinite(acked)]
        after_send = (received - sent[None, :])[:, np.isfinite(acked)]
        delivered = np.isfinite(deliveries)
        elapsed = float(writer["elapsed"][0])
        ack_latency = (acked - sent)[np.isfinite(acked)]
        results["latency"] = {
            "writes": total, "acked": acked_count, "write_errors": int(writer["errors"][0]),
            "achieved_rate_per_s": acked_count / elapsed if elapsed > 0 else None,
            "deliveries_expected": int(delivered.size), "deliveries": int(delivered.sum()),
            "ack_to_event": _summary(after_ack[delivered]),
            "send_to_event": _summary(after_send[delivered]),
            "send_to_ack": _summary(ack_latency),
            "daemon_cpu_s": (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None,
            "daemon_rss_bytes": rss_bytes(daemon.pid),
            "writer_cpu_s": float(writer["cpu"][0]),
            **{f"subscribers_{k}": sum(st[k] for st in sub_stats) for k in sub_stats[0]},
            "subscriber_processes": len(procs),
        }
        lat = results["latency"]["ack_to_event"]
        log(f"  ack → event p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms "
            f"({results['latency']['deliveries']}/{results['latency']['deliveries_expected']} delivered)")
        log(f"phase 2: up to {args.connections} concurrent WebSocket connections")
        conn_out = workdir / "connections.json"
        subprocess.run(_role("connections", ["--url", daemon.url, "--connections", str(args.connections),
                                             "--dimension", str(args.dimension), "--out", str(conn_out)]),
                       check=True, timeout=600)
        results["connections"] = json.loads(conn_out.read_text())
        results["connections"]["daemon_rss_bytes"] = rss_bytes(daemon.pid)
        log(f"  held {results['connections']['held']} connections")
    finally:
        results["daemon_stop_s"] = daemon.stop()
        daemon.kill()
    return results


def render(results: dict[str, Any]) -> str:
    p, m = results["parameters"], results["machine"]
    out = [(f"s5vec live-feed benchmark: {p['subscribers']} WebSocket subscribers, {p['rate_per_s']} single-record "
            f"writes/s for {p['seconds']} s ({p['dimension']}-d) over {p['writer_connections']} writer connections"),
           (f"  machine: {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}; daemon, writer and "
            "subscribers in separate processes")]
    lat = results.get("latency")
    if lat:
        rows = [[name, s["count"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]]
                for name, s in (("write ack → event received", lat["ack_to_event"]),
                                ("write sent → event received", lat["send_to_event"]),
                                ("write sent → ack", lat["send_to_ack"]))]
        out += ["", table(["latency", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows),
                (f"  writes acknowledged {lat['acked']}/{lat['writes']} at {lat['achieved_rate_per_s']:.0f}/s; "
                 f"events delivered {lat['deliveries']}/{lat['deliveries_expected']}; "
                 f"{lat['ack_to_event']['negative_fraction'] * 100:.1f}% arrived before their ack; "
                 f"daemon CPU {lat['daemon_cpu_s']:.1f}s, RSS {mib(lat['daemon_rss_bytes'])} MiB; writer CPU "
                 f"{lat['writer_cpu_s']:.1f}s; subscriber process CPU {lat['subscribers_cpu_s']:.1f}s for "
                 f"{lat['subscribers_frames']} frames")]
    conn = results.get("connections")
    if conn:
        out += ["", (f"concurrent WebSocket connections: held {conn['held']} of {conn['requested']} requested "
                     f"(opened in {conn['open_s']:.1f}s, daemon RSS {mib(conn['daemon_rss_bytes'])} MiB); one write "
                     f"reached {conn['received_fanout']} of them, the last "
                     f"{conn['fanout_last_ms_after_ack']:.1f} ms after its ack "
                     f"(p50 {conn['fanout_p50_ms_after_ack']:.1f} ms)")]
        if conn["failures"]:
            out.append(f"  first failures: {conn['failures']}")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s5vec bench --feeds",
                                     description="Live-feed delivery latency and concurrent WebSocket connections.")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=int, default=1000, help="writes per second (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--connections", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=Path("bench-feeds.json"))
    parser.add_argument("--subscriber-processes", type=int, default=4,
                        help="spread the subscribers over this many processes (default: %(default)s)")
    parser.add_argument("--ef-construction", type=int, default=0,
                        help="the collection's HNSW ef_construction (default: the collection default, 200)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a daemon setting, e.g. engine.background_nice=0 (repeatable)")
    parser.add_argument("--workdir", type=Path, help="daemon data and logs (default: a temp dir, removed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in ("subscribers", "writer", "connections"):
        role = argparse.ArgumentParser(prog=f"s5vec_tools.feeds {argv[0]}")
        role.add_argument("--url", required=True)
        role.add_argument("--out", required=True)
        role.add_argument("--subscribers", type=int, default=100)
        role.add_argument("--max-writes", type=int, default=0)
        role.add_argument("--rate", type=int, default=1000)
        role.add_argument("--seconds", type=float, default=10.0)
        role.add_argument("--dimension", type=int, default=384)
        role.add_argument("--connections", type=int, default=1500)
        args = role.parse_args(argv[1:])
        role_main = {"subscribers": _subscribers, "writer": _writer, "connections": _connections}[argv[0]]
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            asyncio.run(role_main(args))
        else:
            uvloop.run(role_main(args))
        return 0
    args = build_parser().parse_args(argv)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="s5vec-feeds-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, workdir, log)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    finish(results, args.out, started, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
