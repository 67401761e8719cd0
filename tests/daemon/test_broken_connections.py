"""Connections that break mid-request: a client that goes away is not a server error, and a
server error after a streamed response started aborts the connection instead of writing a
second response into the body."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import Daemon
from prometheus_client.parser import text_string_to_metric_families

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
