"""Size limits: REST bodies (``http.max_body_bytes``), WebSocket frames
(``ws.max_message_bytes``), NDJSON lines (per line, the stream goes on) and ``/mcp``."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest
from s5vec.daemon import ingest
from s5vec.daemon.config import ConfigError, load_config

API = "/api/v1"
SMALL = {"S5VEC_HTTP__MAX_BODY_BYTES": "4096", "S5VEC_WS__MAX_MESSAGE_BYTES": "4096"}


def big_record(size: int) -> dict[str, Any]:
    return {"id": "big", "vector": [1.0, 0.0], "metadata": {"blob": "x" * size}}


async def created(make_client: Any, env: dict[str, str]) -> Any:
    client = await make_client(env=env)
    resp = await client.post(f"{API}/collections", json={"name": "c", "dimension": 2})
    assert resp.status == 201
    return client


@pytest.mark.parametrize("path", [f"{API}/collections/c/vectors", f"{API}/collections/c/vectors/batch",
                                  f"{API}/collections/c/search", f"{API}/collections"])
async def test_a_rest_body_over_the_configured_limit_is_413_with_a_clear_error(make_client: Any, path: str) -> None:
    client = await created(make_client, SMALL)
    resp = await client.post(path, json=big_record(8192))
    assert resp.status == 413
    error = (await resp.json())["error"]
    assert error["code"] == "payload_too_large" and "http.max_body_bytes" in error["message"]
    resp = await client.post(f"{API}/collections/c/vectors", json=big_record(1000))  # under the limit: fine
    assert resp.status == 201


async def test_a_chunked_rest_body_over_the_limit_is_413_too(make_client: Any) -> None:
    client = await created(make_client, SMALL)

    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: the limit must hold while reading
        yield json.dumps(big_record(10)).encode()

    resp = await client.post(f"{API}/collections/c/vectors", data=chunks())
    assert resp.status == 413


async def test_a_websocket_frame_over_the_configured_limit_closes_with_1009(make_client: Any) -> None:
    client = await created(make_client, SMALL)
    async with client.ws_connect(f"{API}/ws") as ws:
        await ws.send_json({"type": "upsert", "collection": "c", "record": big_record(1000), "id": 1})
        assert (await ws.receive_json(timeout=5))["type"] == "result"
        await ws.send_json({"type": "upsert", "collection": "c", "record": big_record(8192), "id": 2})
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1009


async def test_an_ndjson_line_over_the_limit_is_rejected_alone_and_the_stream_goes_on(
        make_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await created(make_client, {})
    monkeypatch.setattr(ingest, "MAX_LINE_BYTES", 4096)
    lines = [json.dumps({"id": "a", "vector": [1, 0]}), json.dumps(big_record(10_000)),
             json.dumps({"id": "b", "vector": [0, 1]}), json.dumps(big_record(50_000)) * 3,
             json.dumps({"id": "c", "vector": [1, 1]})]
    resp = await client.post(f"{API}/collections/c/ingest", data=("\n".join(lines) + "\n").encode())
    report = await resp.json()
    assert resp.status == 200, report
    assert report["successful"] == 3 and report["failed"] == 2
    assert [e["line"] for e in report["errors"]] == [2, 4]
    assert all("longer than" in e["error"]["message"] for e in report["errors"])


async def test_an_ndjson_stream_may_exceed_the_body_limit_line_by_line(make_client: Any) -> None:
    client = await created(make_client, SMALL)
    body = "".join(json.dumps({"id": f"r{i}", "vector": [1, i]}) + "\n" for i in range(500)).encode()
    assert len(body) > 4096
    report = await (await client.post(f"{API}/collections/c/ingest", data=body)).json()
    assert report["successful"] == 500


async def test_an_oversize_mcp_body_is_refused_before_it_is_parsed(make_client: Any) -> None:
    client = await make_client()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * (5 << 20)}}).encode()
    resp = await client.post("/mcp", data=io.BytesIO(body), headers={"Accept": "application/json, text/event-stream",
                                                                     "Content-Type": "application/json"})
    assert resp.status == 413


def test_limits_are_configurable_and_checked() -> None:
    config = load_config(env={"S5VEC_HTTP__MAX_BODY_BYTES": "2048", "S5VEC_WS__MAX_MESSAGE_BYTES": "1024"})
    assert config.http.max_body_bytes == 2048 and config.ws.max_message_bytes == 1024
    with pytest.raises(ConfigError, match="http.max_body_bytes"):
        load_config(env={"S5VEC_HTTP__MAX_BODY_BYTES": "10"})
    with pytest.raises(ConfigError, match="ws.max_message_bytes"):
        load_config(env={"S5VEC_WS__MAX_MESSAGE_BYTES": "10"})
