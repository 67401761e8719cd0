"""End to end through the load balancer: systemd/haproxy-s5vec.cfg (the file itself) in front
of 1 writer + 2 followers (``s5vec serve`` subprocesses, replicated durability, 5 s etcd lease
auto failover) on the portal double. 8 threads search through HAProxy and one
writes through it; the writer is SIGKILLed; a follower takes over. No read may fail, and
every acknowledged write must be on the new writer, checked id by id."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, Daemon, free_port
from s5vec.storage.s5 import generate_phrase
from s5vec_tools.failover import call
from test_e2e_failover import daemons, etcd, portal  # noqa: F401  (fixtures)
from test_s5_portal import ThreadPortal, portal_env

pytestmark = pytest.mark.e2e
API = "/api/v1"
CONFIG = REPO / "systemd" / "haproxy-s5vec.cfg"


request = call  # one JSON request, (status, body); 0 when the connection failed


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Any]:
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.fail("haproxy is missing: `make tools` installs Debian's haproxy package")
    procs: list[subprocess.Popen[bytes]] = []

    def start(nodes: list[Daemon]) -> str:
        port = free_port()
        env = {**os.environ, "S5VEC_LB_BIND": f"127.0.0.1:{port}",
               **{f"S5VEC_NODE{i + 1}": f"127.0.0.1:{d.port}" for i, d in enumerate(nodes)}}
        check = subprocess.run([binary, "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        with open(tmp_path / "haproxy.log", "wb") as log:
            procs.append(subprocess.Popen([binary, "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=log))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def role(url: str) -> str | None:
    status, body = request("GET", url + f"{API}/replication/role", timeout=2)
    return body["role"] if status == 200 else None


def test_reads_never_fail_and_no_acknowledged_write_is_lost_when_the_writer_is_killed_behind_haproxy(
        portal: ThreadPortal, etcd: str, daemons: list[Daemon], haproxy: Any, tmp_path: Path) -> None:  # noqa: F811
    env = {**portal_env(portal, generate_phrase(), tmp_path), "S5VEC_LOG_LEVEL": "info",
           "S5VEC_REPLICATION__DURABILITY": "replicated", "S5VEC_REPLICATION__SHIP_INTERVAL_MS": "100",
           "S5VEC_REPLICATION__ETCD_ENDPOINTS": etcd, "S5VEC_REPLICATION__LEASE_TTL_S": "5",
           "S5VEC_REPLICATION__AUTO_FAILOVER": "true", "S5VEC_REPLICATION__POLL_INTERVAL_MS": "50"}
    nodes = [Daemon(tmp_path / f"n{i}", env) for i in range(3)]
    daemons.extend(nodes)
    nodes[0].start()
    assert role(nodes[0].url) == "writer"
    assert request("POST", nodes[0].url + f"{API}/collections", {"name": "c", "dimension": 8})[0] == 201
    for node in nodes[1:]:
        node.start()
        assert role(node.url) == "follower"
    lb = haproxy(nodes)
    deadline = time.monotonic() + 20
    while request("POST", lb + f"{API}/collections/c/vectors", {"id": "warm", "vector": [1.0] * 8})[0] != 201:
        assert time.monotonic() < deadline, "HAProxy found no writer"
        time.sleep(0.1)

    stop = threading.Event()
    reads = {"ok": 0, "failed": 0}
    failures: list[str] = []
    lock = threading.Lock()
    acknowledged: dict[str, float] = {}
    refused: list[float] = []

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            status, _ = request("POST", lb + f"{API}/collections/c/search",
                                {"vector": rng.normal(size=8).tolist(), "k": 5})
            with lock:
                if status == 200:
                    reads["ok"] += 1
                else:
                    reads["failed"] += 1
                    failures.append(f"{time.monotonic():.2f} {status}")

    def writer() -> None:
        rng = np.random.default_rng(99)
        i = 0
        while not stop.is_set():
            status, _ = request("POST", lb + f"{API}/collections/c/vectors",
                                {"id": f"w{i}", "vector": rng.normal(size=8).tolist()})
            now = time.monotonic()
            if status == 201:
                acknowledged[f"w{i}"] = now
            else:
                refused.append(now)
                time.sleep(0.05)
            i += 1

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(8)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        killed = time.monotonic()
        nodes[0].kill()  # SIGKILL the writer
        deadline = killed + 40
        while not any(t > killed for t in acknowledged.values()) or time.monotonic() < killed + 8:
            assert time.monotonic() < deadline, "no write was acknowledged after the writer died"
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    first_after = min(t for t in acknowledged.values() if t > killed)
    new_writer = next(n for n in nodes[1:] if role(n.url) == "writer")
    missing = [rid for rid in acknowledged
               if request("GET", new_writer.url + f"{API}/collections/c/vectors/{rid}")[0] != 200]
    print(f"\nreads ok {reads['ok']}, failed {reads['failed']}; writes acknowledged {len(acknowledged)}, "
          f"refused {len(refused)}; failover window (kill to the next acknowledged write) "
          f"{first_after - killed:.2f} s; missing {len(missing)}")
    assert reads["failed"] == 0, failures[:20]
    assert missing == []
    assert reads["ok"] > 100 and len(acknowledged) > 20
