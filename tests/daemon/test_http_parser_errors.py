"""Requests aiohttp's HTTP parser rejects before any middleware runs: they get the JSON error
shape like every other error, and neither the log nor the answer repeats a header value
(an API key with one bad byte must not end up in the journal)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

KEY = "sk-live-0123456789abcdef-SECRET"
GOOD = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}".encode()
BAD_HEADERS = {
    "trailing NUL": GOOD + b"\x00\r\n\r\n",
    "DEL": GOOD + b"\x7f\r\n\r\n",
    "bare CR": GOOD + b"\rX-Other: 1\r\n\r\n",
    "folded line": (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer\r\n " + KEY.encode()
                    + b"\r\n\r\n"),
    "over 8 KB": GOOD + b"A" * 9000 + b"\r\n\r\n",
}


async def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes: status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def error_of(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"].startswith("application/json"), (headers, body)
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) <= {"code", "message", "field"} and error["code"] and error["message"]
    return error


@pytest.mark.parametrize("case", list(BAD_HEADERS))
async def test_a_header_the_parser_rejects_is_a_json_400_and_the_key_is_neither_logged_nor_echoed(
        client: Any, caplog: pytest.LogCaptureFixture, case: str) -> None:
    caplog.set_level(logging.DEBUG)
    status, headers, body = await exchange(client.server.port, BAD_HEADERS[case])
    assert status in (400, 431)
    error = error_of(headers, body)
    assert KEY not in body.decode("latin-1") and "SECRET" not in error["message"]
    assert KEY not in caplog.text and "SECRET" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1, caplog.text


async def test_a_request_line_over_the_limit_is_a_json_414_pointing_at_the_post_query_route(
        client: Any, caplog: pytest.LogCaptureFixture) -> None:
    ids = [f"video-{i:05d}" for i in range(1000)]
    target = "/api/v1/collections/c/vectors?filter=" + json.dumps({"id": {"$in": ids}}).replace(" ", "")
    assert len(target) > 8190
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    status, headers, body = await exchange(client.server.port, request)
    assert status == 414
    error = error_of(headers, body)
    assert error["code"] == "uri_too_long" and "vectors/query" in error["message"]
    assert "video-00001" not in caplog.text


async def test_too_many_headers_is_a_json_431(client: Any) -> None:
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n"
    status, headers, body = await exchange(client.server.port, request)
    assert status == 431 and error_of(headers, body)["code"] == "headers_too_large"


async def test_a_malformed_request_line_is_a_json_400(client: Any) -> None:
    request = b"GET /health?x=\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    status, headers, body = await exchange(client.server.port, request)
    assert status == 400 and error_of(headers, body)["code"] == "invalid_request"


async def test_a_well_formed_request_is_still_served_on_the_same_server(client: Any) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    status, _, body = await exchange(client.server.port, request)
    assert status == 200 and json.loads(body)["status"] == "ok"


async def test_the_daemon_process_answers_a_bad_header_in_the_error_shape_and_keeps_the_key_out_of_its_log(
        tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data").start()
    try:
        status, headers, body = await exchange(daemon.port, BAD_HEADERS["trailing NUL"])
        assert status == 400 and KEY not in error_of(headers, body)["message"]
    finally:
        assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "rejected a malformed request" in log and KEY not in log and "Traceback" not in log, log[-2000:]
