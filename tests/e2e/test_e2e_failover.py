"""End to end failover: a one-member etcd on loopback ports, a writer and a follower with
``auto_failover`` as ``s5vec serve`` subprocesses on the portal double (replicated
durability, 2 s lease). The writer is frozen with SIGSTOP past its lease: the follower takes
over, every acknowledged write is on the new writer (id by id), and the old writer, thawed
with SIGCONT, acknowledges nothing more and runs again as a follower. Without etcd, a
follower is promoted by hand (``s5vec promote --force``) after the writer is SIGKILLed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Daemon, free_port
from s5vec.storage.s5 import generate_phrase
from test_s5_portal import ThreadPortal, portal_env

pytestmark = pytest.mark.e2e
API = "/api/v1"


@pytest.fixture
def portal() -> Iterator[ThreadPortal]:
    server = ThreadPortal().start()
    yield server
    server.close()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[str]:
    """A one-member etcd on free loopback ports; yields its client URL."""
    binary = shutil.which("etcd")
    if binary is None:
        pytest.fail("etcd is missing: `make tools` installs Debian's etcd-server package")
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    log = open(tmp_path / "etcd.log", "wb")
    proc = subprocess.Popen([binary, "--name", "t", "--data-dir", str(tmp_path / "etcd"),
                             "--listen-client-urls", url, "--advertise-client-urls", url,
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"t=http://127.0.0.1:{peer}"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "etcd.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    if json.load(resp).get("health") == "true":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "etcd did not become healthy"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            os.kill(d.proc.pid, signal.SIGCONT)
            d.proc.kill()
            d.proc.wait(10)


def request(method: str, url: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)
    except OSError:
        return 0, None  # not listening (restarting as another role)


def role(daemon: Daemon) -> str | None:
    status, body = request("GET", daemon.url + f"{API}/replication/role", timeout=2)
    return body["role"] if status == 200 else None


def wait_for(condition: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def write_some(url: str, start: int, count: int, acknowledged: dict[str, list[float]]) -> None:
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        vector = [float(x) for x in rng.normal(size=4)]
        status, _ = request("POST", url + f"{API}/collections/c/vectors", {"id": f"v{i}", "vector": vector})
        assert status == 201, status
        acknowledged[f"v{i}"] = vector


def missing_on(daemon: Daemon, acknowledged: dict[str, list[float]]) -> list[str]:
    return [rid for rid in acknowledged
            if request("GET", daemon.url + f"{API}/collections/c/vectors/{rid}")[0] != 200]


def test_a_follower_takes_over_through_etcd_when_the_writer_freezes_and_the_old_writer_is_fenced(
        portal: ThreadPortal, etcd: str, daemons: list[Daemon], tmp_path: Path) -> None:
    env = {**portal_env(portal, generate_phrase(), tmp_path), "S5VEC_LOG_LEVEL": "info",
           "S5VEC_REPLICATION__DURABILITY": "replicated", "S5VEC_REPLICATION__SHIP_INTERVAL_MS": "100",
           "S5VEC_REPLICATION__ETCD_ENDPOINTS": etcd, "S5VEC_REPLICATION__LEASE_TTL_S": "2",
           "S5VEC_REPLICATION__AUTO_FAILOVER": "true", "S5VEC_REPLICATION__POLL_INTERVAL_MS": "50"}
    a = Daemon(tmp_path / "a", env)
    a.port = free_port()
    daemons.append(a.start())
    assert role(a) == "writer"
    status, _ = request("POST", a.url + f"{API}/collections", {"name": "c", "dimension": 4})
    assert status == 201
    b = Daemon(tmp_path / "b", env)
    daemons.append(b.start())
    assert role(b) == "follower"  # the key is held: it starts as a follower
    acknowledged: dict[str, list[float]] = {}
    write_some(a.url, 0, 30, acknowledged)
    status, body = request("POST", b.url + f"{API}/collections/c/vectors", {"id": "x", "vector": [1, 0, 0, 0]})
    assert status == 403 and body["error"]["code"] == "read_only_replica" and a.url in body["error"]["message"]

    assert a.proc is not None and b.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)  # frozen past its 2 s lease
    window = wait_for(lambda: role(b) == "writer", 30, "the follower taking over")
    write_some(b.url, 100, 10, acknowledged)  # the new writer acknowledges

    os.kill(a.proc.pid, signal.SIGCONT)
    status, body = request("POST", a.url + f"{API}/collections/c/vectors", {"id": "late", "vector": [0, 1, 0, 0]})
    assert status != 201, "the old writer acknowledged a write after it lost its lease"
    wait_for(lambda: role(a) == "follower", 30, "the old writer running again as a follower")
    assert missing_on(b, acknowledged) == []
    assert request("GET", b.url + f"{API}/collections/c/vectors/late")[0] == 404
    status, body = request("GET", a.url + f"{API}/collections/c/vectors/v105?min_lsn=1")
    assert status == 200  # the old writer follows the new one
    print(f"failover window (SIGSTOP to the follower answering role writer): {window:.2f} s")


def test_a_follower_is_promoted_by_hand_without_etcd_after_the_writer_is_killed(
        portal: ThreadPortal, daemons: list[Daemon], tmp_path: Path) -> None:
    env = {**portal_env(portal, generate_phrase(), tmp_path), "S5VEC_LOG_LEVEL": "info",
           "S5VEC_REPLICATION__DURABILITY": "replicated", "S5VEC_REPLICATION__POLL_INTERVAL_MS": "50"}
    writer = Daemon(tmp_path / "w", env)
    daemons.append(writer.start())
    request("POST", writer.url + f"{API}/collections", {"name": "c", "dimension": 4})
    follower = Daemon(tmp_path / "f", env, args=("--follow",))
    daemons.append(follower.start())
    acknowledged: dict[str, list[float]] = {}
    write_some(writer.url, 0, 20, acknowledged)
    writer.kill()

    cli = [sys.executable, "-m", "s5vec.daemon.cli", "promote", "--url", follower.url]
    refused = subprocess.run(cli, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "force_required" in refused.stderr
    promoted = subprocess.run([*cli, "--force"], capture_output=True, text=True, timeout=30)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["epoch"] == 1
    wait_for(lambda: role(follower) == "writer", 30, "the promoted follower answering as the writer")
    assert missing_on(follower, acknowledged) == []
    write_some(follower.url, 100, 5, acknowledged)
    assert missing_on(follower, acknowledged) == []
