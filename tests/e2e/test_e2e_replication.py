"""End to end: a writer with replicated durability and a ``s5vec serve --follow`` follower
as subprocesses on the portal double; the writer is SIGKILLed and nothing it acknowledged
is lost: the follower keeps serving every write, and a new node from the phrase alone has
every one (checked id by id)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Daemon
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
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)


def request(method: str, url: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.load(resp), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err), dict(err.headers)


def test_a_follower_serves_every_replicated_write_after_the_writer_is_killed(
        portal: ThreadPortal, daemons: list[Daemon], tmp_path: Path) -> None:
    env = {**portal_env(portal, generate_phrase(), tmp_path), "S5VEC_LOG_LEVEL": "info",
           "S5VEC_REPLICATION__DURABILITY": "replicated", "S5VEC_REPLICATION__SHIP_INTERVAL_MS": "200"}
    writer = Daemon(tmp_path / "writer", env)
    daemons.append(writer.start())
    status, _, _ = request("POST", writer.url + f"{API}/collections", {"name": "c", "dimension": 4})
    assert status == 201
    follower = Daemon(tmp_path / "follower", {**env, "S5VEC_REPLICATION__POLL_INTERVAL_MS": "50",
                                              "S5VEC_REPLICATION__WRITER_URL": writer.url}, args=("--follow",))
    daemons.append(follower.start())

    rng = np.random.default_rng(3)
    acknowledged: dict[str, tuple[list[float], int]] = {}
    for i in range(40):
        vector = [round(float(x), 4) for x in rng.normal(size=4)]
        status, _, headers = request("POST", writer.url + f"{API}/collections/c/vectors",
                                     {"id": f"v{i}", "vector": vector, "metadata": {"i": i}})
        assert status == 201
        acknowledged[f"v{i}"] = (vector, int(headers["S5vec-LSN"]))
        if i % 10 == 0:  # read-your-writes on the follower
            status, body, _ = request("GET", follower.url + f"{API}/collections/c/vectors/v{i}?min_lsn="
                                      f"{acknowledged[f'v{i}'][1]}")
            assert status == 200 and body["metadata"] == {"i": i}
    status, body, headers = request("POST", follower.url + f"{API}/collections/c/vectors",
                                    {"id": "x", "vector": [1, 0, 0, 0]})
    assert status == 403 and body["error"]["code"] == "read_only_replica" and headers["S5vec-Writer"] == writer.url

    writer.kill()  # SIGKILL: no final checkpoint, no last shipping round

    last = max(lsn for _, lsn in acknowledged.values())
    for record_id, (vector, _lsn) in acknowledged.items():
        status, body, _ = request("GET", follower.url + f"{API}/collections/c/vectors/{record_id}?min_lsn={last}")
        assert status == 200, record_id
        expected = np.array(vector) / np.linalg.norm(vector)  # cosine collections store unit vectors
        assert np.allclose(body["vector"], expected, atol=1e-3), record_id
    status, role, _ = request("GET", follower.url + f"{API}/replication/role")
    assert role["role"] == "follower" and role["applied_lsn"] >= last
    assert request("GET", follower.url + "/ready")[0] == 200

    # a new writer from the phrase alone (a new machine): every acknowledged write, id by id
    fresh = Daemon(tmp_path / "fresh", env)
    daemons.append(fresh.start())
    missing = [record_id for record_id in acknowledged
               if request("GET", fresh.url + f"{API}/collections/c/vectors/{record_id}")[0] != 200]
    assert missing == []
