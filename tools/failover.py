"""Failover under load through HAProxy: the issue-20 proof, on one machine.

``python -m s5vec_tools.failover [--mode etcd|promote] [--lease-ttl-s 5] [--write-rate 500] [--out FILE]``

Starts the S5 portal double, (with ``--mode etcd``) a one-member etcd, three ``s5vec serve``
nodes on it (one writer, two followers; replicated durability unless ``--durability
local``) and HAProxy with ``systemd/haproxy-s5vec.cfg``. ``--readers`` threads search
through HAProxy and ``--writers`` threads write through it at ``--write-rate`` writes/s in
total; follower lag is sampled every 100 ms. After ``--before`` seconds the writer is
SIGKILLed: with etcd a follower takes over by itself, with ``--mode promote`` the tool runs
``s5vec promote --force`` on a follower one second later. After ``--after`` more seconds
the load stops and every acknowledged write is looked up on the new writer, id by id; a
fourth node is started from the phrase alone and timed to ready. Writes ``--out`` (JSON,
the RELIABILITY.md input).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from s5vec.storage.s5.seed import generate_phrase

from .daemon_proc import Daemon, free_port

REPO = Path(__file__).resolve().parents[1]
HAPROXY_CONFIG = REPO / "systemd" / "haproxy-s5vec.cfg"
DIM = 32


def call(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.load(err)
        except ValueError:
            return err.code, None
    except (OSError, ValueError):
        return 0, None


def wait_until(condition: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else 0.0


def start_etcd(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("etcd")
    if binary is None:
        raise RuntimeError("etcd is missing: `make tools` installs Debian's etcd-server package")
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    with open(root / "etcd.log", "wb") as log:
        proc = subprocess.Popen([binary, "--name", "f", "--data-dir", str(root / "etcd"),
                                 "--listen-client-urls", url, "--advertise-client-urls", url,
                                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                                 "--initial-cluster", f"f=http://127.0.0.1:{peer}"], stdout=log, stderr=log)
    wait_until(lambda: call("GET", url + "/health", timeout=1)[0] == 200, 20, "etcd answering")
    return proc, url


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    nodes: list[Daemon] = []
    try:
        portal_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "s5vec.testing.portal", "--port", str(portal_port),
                                       "--latency-ms", str(args.portal_latency_ms)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        portal = f"http://127.0.0.1:{portal_port}"
        wait_until(lambda: call("GET", portal + "/s5/registry?pk=x", timeout=1)[0] in (400, 404), 20, "the portal")
        phrase_file = root / "phrase"
        phrase_file.write_text(generate_phrase() + "\n")
        phrase_file.chmod(0o600)
        settings = {"storage.mode": "portal", "storage.portal_url": portal,
                    "storage.seed_phrase_file": str(phrase_file), "storage.retries": "2",
                    "replication.durability": args.durability, "replication.ship_interval_ms": "200",
                    "replication.poll_interval_ms": "100", "replication.lease_ttl_s": str(args.lease_ttl_s)}
        if args.mode == "etcd":
            etcd, etcd_url = start_etcd(root)
            procs.append(etcd)
            settings.update({"replication.etcd_endpoints": etcd_url, "replication.auto_failover": "true"})
        for i in range(3):
            node_settings = dict(settings)
            if args.mode == "promote" and i > 0:
                node_settings["replication.role"] = "follower"
            nodes.append(Daemon(root / f"node{i}", root / f"node{i}.log", settings=node_settings))
        nodes[0].start()
        nodes[0].wait_status("/ready")
        status, _ = call("POST", nodes[0].url + "/api/v1/collections", {"name": "c", "dimension": DIM})
        if status != 201:
            raise RuntimeError(f"creating the collection answered {status}")
        for node in nodes[1:]:
            node.start()
            node.wait_status("/ready")
        lb_port = free_port()
        lb = f"http://127.0.0.1:{lb_port}"
        env = {**os.environ, "S5VEC_LB_BIND": f"127.0.0.1:{lb_port}",
               **{f"S5VEC_NODE{i + 1}": f"127.0.0.1:{n.port}" for i, n in enumerate(nodes)}}
        with open(root / "haproxy.log", "wb") as log:
            procs.append(subprocess.Popen(["haproxy", "-db", "-f", str(HAPROXY_CONFIG)], env=env, stdout=log,
                                          stderr=log))
        wait_until(lambda: call("POST", lb + "/api/v1/collections/c/vectors",
                                {"id": "warm", "vector": [1.0] * DIM})[0] == 201, 30, "a write through HAProxy")
        return load(args, nodes, lb, root)
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGKILL)
                node.proc.wait()
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def load(args: argparse.Namespace, nodes: list[Daemon], lb: str, root: Path) -> dict[str, Any]:
    stop = threading.Event()
    lock = threading.Lock()
    reads = {"ok": 0, "failed": 0}
    read_failures: list[str] = []
    acknowledged: dict[str, float] = {}
    refused: list[float] = []
    lag_s: list[float] = []
    lag_lsn: list[int] = []
    sent = [0]
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(1024, DIM)).astype(np.float32).round(4).tolist()

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        while not stop.is_set():
            status, _ = call("POST", lb + "/api/v1/collections/c/search", {"vector": vectors[int(r.integers(1024))],
                                                                            "k": 10})
            with lock:
                if status == 200:
                    reads["ok"] += 1
                else:
                    reads["failed"] += 1
                    read_failures.append(f"{time.monotonic():.2f}: {status}")

    def writer(index: int) -> None:
        interval = args.writers / args.write_rate
        due = time.monotonic()
        while not stop.is_set():
            due += interval
            with lock:
                n = sent[0]
                sent[0] += 1
            record_id = f"w{n}"
            status, _ = call("POST", lb + "/api/v1/collections/c/vectors",
                             {"id": record_id, "vector": vectors[n % 1024]})
            now = time.monotonic()
            with lock:
                if status == 201:
                    acknowledged[record_id] = now
                else:
                    refused.append(now)
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            elif pause < -1:
                due = time.monotonic()  # behind by more than a second: do not burst to catch up

    def sampler(until: list[float]) -> None:
        while not stop.is_set() and time.monotonic() < until[0]:
            writer_lsn = call("GET", nodes[0].url + "/api/v1/replication/role", timeout=1)[1]
            for node in nodes[1:]:
                status, doc = call("GET", node.url + "/api/v1/replication/role", timeout=1)
                if status == 200 and doc.get("role") == "follower":
                    lag_s.append(float(doc["lag_seconds"]))
                    if writer_lsn:
                        lag_lsn.append(max(0, int(writer_lsn["applied_lsn"]) - int(doc["applied_lsn"])))
            time.sleep(0.1)

    kill_at = [time.monotonic() + args.before]
    threads = [threading.Thread(target=reader, args=(s,)) for s in range(args.readers)]
    threads += [threading.Thread(target=writer, args=(w,)) for w in range(args.writers)]
    threads.append(threading.Thread(target=sampler, args=(kill_at,)))
    began = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(args.before)
        killed = time.monotonic()
        before_kill = len(acknowledged)
        assert nodes[0].proc is not None
        nodes[0].proc.send_signal(signal.SIGKILL)
        nodes[0].proc.wait()
        if args.mode == "promote":
            time.sleep(1.0)
            subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", "promote", "--force", "--url", nodes[1].url],
                           check=True, capture_output=True, timeout=30)
        time.sleep(args.after)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    after = sorted(t for t in acknowledged.values() if t > killed)
    refused_after = sorted(t for t in refused if t > killed)
    new_writer = next((n for n in nodes[1:] if (call("GET", n.url + "/api/v1/replication/role")[1] or {})
                       .get("role") == "writer"), None)
    if new_writer is None:
        raise RuntimeError("no node answers as the writer after the failover")
    missing = [rid for rid in acknowledged
               if call("GET", new_writer.url + f"/api/v1/collections/c/vectors/{rid}")[0] != 200]
    fresh = Daemon(root / "fresh", root / "fresh.log", settings={**nodes[1].settings, "replication.role": "follower",
                                                                 "replication.auto_failover": "false"})
    spawned = fresh.start()
    ready_at, _ = fresh.wait_status("/ready", timeout=60)
    fresh.stop()
    return {
        "reads": {"ok": reads["ok"], "failed": reads["failed"], "first_failures": read_failures[:10]},
        "writes": {"acknowledged": len(acknowledged), "refused": len(refused),
                   "offered_per_s": args.write_rate,
                   "acknowledged_per_s_before_kill": round(before_kill / (killed - began), 1),
                   "lost": len(missing), "lost_ids": missing[:20]},
        "failover": {"kill_to_next_acknowledged_write_s": round(after[0] - killed, 2) if after else None,
                     "writes_refused_for_s": round(refused_after[-1] - refused_after[0], 2) if refused_after else 0.0,
                     "new_writer": new_writer.url},
        "follower_lag_before_kill": {"samples": len(lag_s), "seconds_p50": percentile(lag_s, 50),
                                     "seconds_p99": percentile(lag_s, 99),
                                     "lsn_p50": percentile([float(x) for x in lag_lsn], 50),
                                     "lsn_p99": percentile([float(x) for x in lag_lsn], 99)},
        "new_follower_from_the_phrase_ready_s": round(ready_at - spawned, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m s5vec_tools.failover", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("etcd", "promote"), default="etcd")
    parser.add_argument("--durability", choices=("replicated", "local"), default="replicated")
    parser.add_argument("--lease-ttl-s", type=int, default=5)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--writers", type=int, default=8, help="writing threads (sharing --write-rate)")
    parser.add_argument("--write-rate", type=float, default=500.0)
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of load after the kill")
    parser.add_argument("--portal-latency-ms", type=float, default=0.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="s5vec-failover-") as tmp:
        summary = run(args, Path(tmp))
    ok = summary["reads"]["failed"] == 0 and (summary["writes"]["lost"] == 0 or args.durability == "local")
    out = {"name": f"failover-{args.mode}-{args.durability}",
           "command": " ".join(["python -m s5vec_tools.failover", *(argv if argv is not None else sys.argv[1:])]),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
           "seconds": round(time.time() - started, 1), "ok": ok, "summary": summary}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
