"""End to end on an S5 portal: ``s5vec serve`` subprocesses in portal mode against the
portal double (served from a thread of the test process, so its state can be inspected
and it can be taken down and brought back on the same port)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from aiohttp import web
from conftest import Daemon, free_port
from s5vec.storage import decode_blob
from s5vec.storage.s5 import Identity, b64url, decrypt_blob, generate_phrase
from s5vec.testing.portal import FAULTS, PORTAL, create_test_portal

pytestmark = pytest.mark.e2e
API = "/api/v1"
DIM = 16
MARKER = "confidential-title-4b8e1f"
TOKEN = "static-portal-token-91c2d7e5aa"
T = TypeVar("T")


class ThreadPortal:
    """The portal double on its own event loop thread; ``down()`` stops listening and drops
    open connections, ``up()`` listens again on the same port with the same state."""

    def __init__(self) -> None:
        self.app = create_test_portal()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-portal", daemon=True)
        self._runner = web.AppRunner(self.app, access_log=None)
        self._site: web.TCPSite | None = None

    def _await(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the portal's loop (its state is only touched there)."""
        async def run() -> T:
            return fn()
        result: T = self._await(run())
        return result

    async def _listen(self) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()

    def start(self) -> ThreadPortal:
        self._thread.start()
        self._await(self._runner.setup())
        self._await(self._listen())
        return self

    def down(self) -> None:
        def drop_everything() -> None:
            self.app[FAULTS].drop_next = 10**9  # connections kept alive by clients get closed unanswered
        self.call(drop_everything)
        assert self._site is not None
        self._await(self._site.stop())

    def up(self) -> None:
        def answer_again() -> None:
            self.app[FAULTS].drop_next = 0
        self.call(answer_again)
        self._await(self._listen())

    def blobs(self) -> list[bytes]:
        return self.call(lambda: list(self.app[PORTAL].blobs.values()))

    def registry(self) -> list[tuple[int, bytes]]:
        return self.call(lambda: [(e.revision, e.data) for e in self.app[PORTAL].registry.values()])

    def close(self) -> None:
        self._await(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def portal() -> Iterator[ThreadPortal]:
    server = ThreadPortal().start()
    yield server
    server.close()


@pytest.fixture
def phrase() -> str:
    return generate_phrase()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)


def portal_env(portal: ThreadPortal, phrase: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "seed-phrase"
    if not path.exists():
        path.write_text(phrase + "\n")
        path.chmod(0o600)
    return {"S5_MODE": "portal", "S5_PORTAL_URL": portal.url, "S5_SEED_PHRASE_FILE": str(path),
            "S5_AUTH_TOKEN": TOKEN, "S5VEC_LOG_LEVEL": "debug", "S5VEC_STORAGE__RETRIES": "1",
            "S5VEC_STORAGE__TIMEOUT_S": "5"}


def new_daemon(daemons: list[Daemon], data_dir: Path, env: dict[str, str]) -> Daemon:
    daemon = Daemon(data_dir, env)
    daemons.append(daemon)
    return daemon.start()


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def vectors(count: int) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(count, DIM)).astype(np.float32)


def upsert(daemon: Daemon, vecs: np.ndarray, start: int, stop: int) -> None:
    body = {"vectors": [{"id": f"v{i}", "vector": vecs[i].tolist(), "metadata": {"i": i, "title": f"{MARKER} {i}"}}
                        for i in range(start, stop)]}
    status, result = call("POST", f"{daemon.url}{API}/collections/videos/vectors/batch", body)
    assert status == 200 and result["failed"] == 0, result


def assert_restored(daemon: Daemon, vecs: np.ndarray, count: int) -> None:
    status, info = call("GET", f"{daemon.url}{API}/collections/videos")
    assert status == 200 and info["count"] == count
    for i in range(0, count, 7):
        status, record = call("GET", f"{daemon.url}{API}/collections/videos/vectors/v{i}")
        assert status == 200 and record["metadata"] == {"i": i, "title": f"{MARKER} {i}"}
    for i in (0, count // 2, count - 1):
        status, found = call("POST", f"{daemon.url}{API}/collections/videos/search",
                             {"vector": vecs[i].tolist(), "k": 1})
        assert status == 200 and found["results"][0]["id"] == f"v{i}"


def wait_for_health(daemon: Daemon, status: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = call("GET", f"{daemon.url}/health")
        assert code == 200
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.1)


def secrets_of(phrase: str) -> list[str]:
    """The phrase's words in pairs, and every derived key in hex and base64url."""
    identity = Identity.from_phrase(phrase)
    keys = [identity.seed, identity.main, identity.private_sub, identity.storage_accounts, identity.hidden_db,
            identity.file_system, identity.fs_root_write_key, identity.blob_encryption_key(),
            identity.root_registry_seed(), identity.portal_account_seed(),
            identity.account_key(identity.portal_account_seed())]
    words = phrase.split()
    return ([f"{a} {b}" for a, b in itertools.pairwise(words)] + [k.hex() for k in keys] + [b64url(k) for k in keys]
            + [TOKEN])


def test_a_second_daemon_restores_the_database_from_the_portal_with_the_same_phrase(
        portal: ThreadPortal, phrase: str, daemons: list[Daemon], tmp_path: Path) -> None:
    env = portal_env(portal, phrase, tmp_path)
    vecs = vectors(240)
    first = new_daemon(daemons, tmp_path / "first", env)
    assert call("POST", f"{first.url}{API}/collections", {"name": "videos", "dimension": DIM})[0] == 201
    upsert(first, vecs, 0, 240)
    status, checkpoint = call("POST", f"{first.url}{API}/admin/checkpoint")
    assert status == 200 and checkpoint["manifest"]
    health = wait_for_health(first, "ok")
    assert health["storage"]["mode"] == "portal" and health["storage"]["reachable"]
    first.kill()

    second = new_daemon(daemons, tmp_path / "second", env)  # empty data dir: the registry root alone
    assert_restored(second, vecs, 240)
    second.stop()

    # encrypted client-side: no plaintext on the portal, yet the phrase's key opens every blob
    blobs = portal.blobs()
    assert blobs and all(blob[:2] == b"\x8d\x01" and MARKER.encode() not in blob for blob in blobs)
    key = Identity.from_phrase(phrase).blob_encryption_key()
    opened = [decode_blob(decrypt_blob(key, blob)) for blob in blobs]
    assert any(MARKER in repr(doc) for doc in opened)

    logs = first.log.read_text() + second.log.read_text()
    assert "checkpoint at LSN" in logs  # the logs are there, at debug level ...
    leaked = [secret for secret in secrets_of(phrase) if secret in logs]
    assert not leaked, "secrets in the daemon's log output"  # ... and hold no secret


def test_writes_survive_a_portal_outage_and_a_sigkill_during_it(
        portal: ThreadPortal, phrase: str, daemons: list[Daemon], tmp_path: Path) -> None:
    env = portal_env(portal, phrase, tmp_path)
    vecs = vectors(150)
    daemon = new_daemon(daemons, tmp_path / "node", env)
    call("POST", f"{daemon.url}{API}/collections", {"name": "videos", "dimension": DIM})
    upsert(daemon, vecs, 0, 50)
    assert call("POST", f"{daemon.url}{API}/admin/checkpoint")[0] == 200
    root_before = portal.registry()

    portal.down()
    upsert(daemon, vecs, 50, 120)  # acknowledged from the local WAL
    status, error = call("POST", f"{daemon.url}{API}/admin/checkpoint")
    assert status == 503 and error["error"]["code"] == "storage_unavailable"
    health = wait_for_health(daemon, "degraded")
    assert health["storage"]["consecutive_failures"] >= 1 and health["applied_lsn"] > health["checkpoint_lsn"]
    assert call("GET", f"{daemon.url}/ready")[0] == 200
    assert portal.registry() == root_before  # nothing half-uploaded became the root

    daemon.kill()  # SIGKILL during the outage
    daemon.start()  # from the local root copy and the WAL: the portal is still down
    upsert(daemon, vecs, 120, 150)
    assert_restored(daemon, vecs, 150)
    wait_for_health(daemon, "degraded")

    portal.up()
    status, checkpoint = call("POST", f"{daemon.url}{API}/admin/checkpoint")
    assert status == 200, checkpoint
    health = wait_for_health(daemon, "ok")
    assert health["storage"]["reachable"] and health["applied_lsn"] == health["checkpoint_lsn"]
    assert portal.registry()[0][0] > root_before[0][0]
    daemon.stop()

    fresh = new_daemon(daemons, tmp_path / "fresh", env)
    assert_restored(fresh, vecs, 150)
