"""Connections that break mid-request: a client that goes away is not a server error, and a
server error after a streamed response started aborts the connection instead of writing a
second response into the body."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon
from prometheus_client.parser import text_string_to_metric_families

from s5vec.client import Client, S5vecError
from s5vec.engine.manifest import get_doc, read_manifest
from s5vec.storage import BlobId, LocalBlobStore

WS_ROUTE = "/api/v1/ws"
UPGRADE = (b"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def ws_requests_by_status(url: str) -> tuple[dict[str, float], float]:
    """``/api/v1/ws`` requests by status, and the requests in flight (the scrape included)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    in_flight = next(s.value for s in samples if s.name == "s5vec_http_requests_in_flight")
    return {s.labels["status"]: s.value for s in samples
            if s.name == "s5vec_http_request_duration_seconds_count" and s.labels.get("route") == WS_ROUTE}, in_flight


def test_aborted_websocket_handshakes_are_counted_as_499_and_logged_without_a_traceback(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data").start()
    try:
        sockets = [socket.create_connection(("127.0.0.1", daemon.port), timeout=10) for _ in range(20)]
        for sock in sockets:
            sock.sendall(UPGRADE)
        for sock in sockets:  # all gone before the daemon answers most of them
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            sock.close()
        # bounded wait until the aborted requests were seen and none is in flight any more (a
        # handshake that completed before its client left is a WebSocket session: not counted)
        deadline = time.monotonic() + 30
        counts, in_flight = ws_requests_by_status(daemon.url)
        while (not counts or in_flight > 1) and time.monotonic() < deadline:
            time.sleep(0.05)
            counts, in_flight = ws_requests_by_status(daemon.url)
        assert counts.get("500", 0) == 0, counts
        assert 0 < counts.get("499", 0) <= 20, counts
    finally:
        assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


# ------------------------------------------------------------------ export of a corrupt blob
DAY = 86_400


def call(url: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def corrupt_a_historical_segment(data_dir: Path) -> None:
    """Flip a byte in the middle of the vectors of collection ``c``'s first historical
    segment: a blob loaded lazily, so the daemon starts and fails only when it reads it."""
    async def find() -> Path:
        store = LocalBlobStore(data_dir)
        root = store.get_root_sync()
        assert root is not None
        manifest = await read_manifest(store, root)
        frozen = await get_doc(store, manifest["collections"]["c"]["segments"][0]["frozen"])
        name = BlobId.from_bytes(frozen["blobs"]["vectors"][0]).base32()
        return data_dir / "blobs" / name[-2:] / name

    victim = asyncio.run(find())
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))


def raw_get(port: int, path: str) -> bytes:
    """What curl reads: bytes until the final chunk of a chunked body, or until the server
    closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        out = b""
        while not out.endswith(b"\r\n0\r\n\r\n") and (chunk := sock.recv(1 << 16)):
            out += chunk
    return out


def test_an_export_that_fails_midway_aborts_the_connection_and_every_client_says_so(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data").start()
    call(daemon.url, "POST", "/api/v1/collections", {"name": "c", "dimension": 2, "metric": "l2",
                                                      "segment_records": 50})
    now = time.time()
    records = [{"id": f"r{i:04d}", "vector": [float(i), 1.0],  # the first 1,000 (one export chunk) are recent
                "timestamp": now - (60 * DAY if i >= 1000 else 0)} for i in range(1100)]
    assert call(daemon.url, "POST", "/api/v1/collections/c/vectors/batch", {"vectors": records})["failed"] == 0
    assert call(daemon.url, "POST", "/api/v1/admin/migrate")["moved"] == 100
    assert daemon.stop() == 0
    corrupt_a_historical_segment(daemon.data_dir)
    daemon.start()
    try:
        # curl's view: a chunked body cut off (no final chunk), not a second response inside it
        raw = raw_get(daemon.port, "/api/v1/collections/c/export")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
        assert b"HTTP/1.1" not in body and b"storage_corrupt" not in body
        assert b'"id":"r0999"' in body and not body.endswith(b"0\r\n\r\n")

        with Client(daemon.url, timeout=30) as client:
            with pytest.raises(S5vecError, match="broke"):
                for _ in client.export("c"):
                    pass

        out = tmp_path / "c.ndjson"
        done = subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", "export", "c", "--out", str(out),
                               "--url", daemon.url], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode != 0, done.stderr
        assert "incomplete" in done.stderr and str(out) in done.stderr, done.stderr
        assert out.read_text().count("\n") == 1000  # what came before the failure, for --after
    finally:
        daemon.stop()
    log = daemon.log.read_text()
    assert "storage_corrupt" in log and "connection closed" in log
