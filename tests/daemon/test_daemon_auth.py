"""API keys and scopes: read < write < admin; 401 without a known key, 403 without the scope.

The matrix is self-checking: every route of the real app's router and every WebSocket
message type must have a row here, so a new route without a decided scope fails the suite.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

import aiohttp
import msgspec
import pytest
import numpy as np
from s5vec.client.bulk import ARROW_STREAM, arrow_stream, arrow_table
from s5vec.daemon import create_app, load_config
from s5vec.daemon.wire import WsMessage

READ, WRITE, ADMIN = "read-key-0123456789", "write-key-0123456789", "admin-key-0123456789"
WRONG: Final = "wrong-key-0123456789"
ENV = {"S5VEC_API_KEYS": f"{READ}:read;{WRITE}:write;{ADMIN}:admin"}
API = "/api/v1"
RANK = {None: 0, "read": 1, "write": 2, "admin": 3}
KEYS: Final = [(None, 0), (WRONG, 0), (READ, 1), (WRITE, 2), (ADMIN, 3)]
SECRETS: Final = (READ, WRITE, ADMIN, WRONG)
MCP_PING: Final = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
BULK_BODY: Final = arrow_stream(arrow_table(["k"], np.array([[1.0, 1.0]], np.float32)))


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class Row:
    """One route: the scope it needs (None: public) and a request that, once authorised,
    gets one of ``ok`` (2xx, or a legitimate non-auth answer such as 404/409)."""

    scope: str | None
    path: str
    body: Any = None
    ok: tuple[int, ...] = (200,)
    headers: tuple[tuple[str, str], ...] = ()
    stream: bool = False


# (method, canonical route) -> Row. "*" is a route for any method (/mcp).
TABLE: Final[dict[tuple[str, str], Row]] = {
    ("GET", "/health"): Row(None, "/health"),
    ("GET", "/ready"): Row(None, "/ready"),
    ("GET", "/openapi.json"): Row(None, "/openapi.json"),
    ("GET", "/metrics"): Row(None, "/metrics"),  # public on loopback: see test_metrics_scope_*
    ("GET", f"{API}/ws"): Row(None, f"{API}/ws"),  # authenticates itself: see the WebSocket tests
    # the console's static files hold no data; the page calls the API with the user's key
    ("GET", "/ui"): Row(None, "/ui", ok=(200, 308)),
    ("GET", "/ui/{name}"): Row(None, "/ui/console.js"),
    ("GET", f"{API}/collections"): Row("read", f"{API}/collections"),
    ("GET", f"{API}/replication/role"): Row("read", f"{API}/replication/role"),
    ("POST", f"{API}/admin/promote"): Row("admin", f"{API}/admin/promote", ok=(409,)),  # 409: a writer already
    ("POST", f"{API}/collections"): Row("write", f"{API}/collections", {"name": "w", "dimension": 2}, (201, 200)),
    ("GET", f"{API}/collections/{{c}}"): Row("read", f"{API}/collections/v"),
    ("DELETE", f"{API}/collections/{{c}}"): Row("write", f"{API}/collections/doomed", ok=(200, 204, 404)),
    ("POST", f"{API}/collections/{{c}}/vectors"): Row("write", f"{API}/collections/v/vectors",
                                                      {"id": "n", "vector": [1, 0]}, (201, 200)),
    ("POST", f"{API}/collections/{{c}}/vectors/batch"): Row(
        "write", f"{API}/collections/v/vectors/batch", {"vectors": [{"id": "m", "vector": [0, 1]}]}),
    ("POST", f"{API}/collections/{{c}}/vectors/delete"): Row("write", f"{API}/collections/v/vectors/delete",
                                                             {"ids": ["b"]}),
    ("PATCH", f"{API}/collections/{{c}}/vectors/{{id}}"): Row("write", f"{API}/collections/v/vectors/a",
                                                              {"metadata": {"x": 1}}),
    ("PUT", f"{API}/collections/{{c}}/vectors/{{id}}"): Row("write", f"{API}/collections/v/vectors/a",
                                                            {"metadata": {"x": 1}}),
    ("GET", f"{API}/collections/{{c}}/vectors"): Row("read", f"{API}/collections/v/vectors"),
    ("POST", f"{API}/collections/{{c}}/vectors/query"): Row("read", f"{API}/collections/v/vectors/query", {"limit": 1}),
    ("GET", f"{API}/collections/{{c}}/export"): Row("read", f"{API}/collections/v/export", stream=True),
    ("GET", f"{API}/collections/{{c}}/vectors/{{id}}"): Row("read", f"{API}/collections/v/vectors/a"),
    ("DELETE", f"{API}/collections/{{c}}/vectors/{{id}}"): Row("write", f"{API}/collections/v/vectors/c",
                                                               ok=(200, 404)),
    ("POST", f"{API}/collections/{{c}}/search"): Row("read", f"{API}/collections/v/search", {"vector": [1, 0]}),
    ("POST", f"{API}/collections/{{c}}/tune"): Row("write", f"{API}/collections/v/tune", {"sample": 10},
                                                   (200, 400, 422)),
    ("POST", f"{API}/collections/{{c}}/ingest"): Row("write", f"{API}/collections/v/ingest",
                                                     b'{"id": "i", "vector": [1, 1]}\n'),
    ("POST", f"{API}/collections/{{c}}/bulk"): Row("write", f"{API}/collections/v/bulk", BULK_BODY,
                                                   headers=(("Content-Type", ARROW_STREAM),)),
    ("POST", f"{API}/vectors"): Row("write", f"{API}/vectors", {"id": "d", "vector": [1, 0]}, (201, 200)),
    ("POST", f"{API}/vectors/batch"): Row("write", f"{API}/vectors/batch", {"vectors": [{"id": "e", "vector": [1, 0]}]}),
    ("GET", f"{API}/vectors/{{id}}"): Row("read", f"{API}/vectors/d", ok=(200, 404)),
    ("DELETE", f"{API}/vectors/{{id}}"): Row("write", f"{API}/vectors/zz", ok=(200, 404)),
    ("POST", f"{API}/search"): Row("read", f"{API}/search", {"vector": [1, 0]}, (200, 404)),
    ("GET", f"{API}/stream/updates"): Row("read", f"{API}/stream/updates", stream=True),
    ("GET", f"{API}/admin/jobs"): Row("admin", f"{API}/admin/jobs"),
    ("POST", f"{API}/admin/{{job}}"): Row("admin", f"{API}/admin/checkpoint", ok=(200, 409)),
    ("POST", f"{API}/admin/backup"): Row("admin", f"{API}/admin/backup", ok=(200, 409)),
    ("GET", f"{API}/admin/backups"): Row("admin", f"{API}/admin/backups"),
    ("POST", f"{API}/admin/backups/{{id}}/verify"): Row("admin", f"{API}/admin/backups/nope/verify", ok=(404,)),
    ("GET", f"{API}/admin/statistics"): Row("admin", f"{API}/admin/statistics"),
    ("GET", f"{API}/admin/health"): Row("admin", f"{API}/admin/health", ok=(200, 503)),
    ("*", "/mcp"): Row("read", "/mcp", MCP_PING, headers=(("Accept", "application/json, text/event-stream"),)),
}


WS_ROUTE: Final = ("GET", f"{API}/ws")  # the WebSocket matrix below


def router_routes(config: Any) -> set[tuple[str, str]]:
    """``(method, canonical path)`` of every route the real app registers (HEAD twins of
    GET routes left out: aiohttp adds them itself)."""
    app = create_app(config)
    return {(route.method, resource.canonical) for resource in app.router.resources() for route in resource
            if route.method != "HEAD"}


def test_every_route_of_the_router_has_a_decided_scope(tmp_path: Path) -> None:
    routes = router_routes(load_config(env=ENV, overrides={"data_dir": str(tmp_path)}))
    missing = routes - TABLE.keys()
    assert not missing, f"routes without a row in the auth matrix (decide their scope): {sorted(missing)}"
    stale = TABLE.keys() - routes
    assert not stale, f"rows for routes the app no longer has: {sorted(stale)}"


@pytest.fixture
async def secured(make_client: Any) -> Any:
    client = await make_client(env=ENV)
    for name in ("v", "doomed"):
        resp = await client.post(f"{API}/collections", json={"name": name, "dimension": 2}, headers=bearer(ADMIN))
        assert resp.status == 201
    resp = await client.post(f"{API}/collections/v/vectors/batch", headers=bearer(ADMIN),
                             json={"vectors": [{"id": i, "vector": [1, n]} for n, i in enumerate("abc")]})
    assert resp.status == 200
    return client


async def _call(client: Any, method: str, row: Row, key: str | None) -> tuple[int, str]:
    headers = {**bearer(key), **dict(row.headers)}
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(row.body, bytes):
        kwargs["data"] = row.body
    elif row.body is not None:
        kwargs["json"] = row.body
    async with client.request("POST" if method == "*" else method, row.path, **kwargs) as resp:
        if row.stream and resp.status == 200:
            return resp.status, ""  # an open event stream: the status line is the answer
        return resp.status, await resp.text()


@pytest.mark.parametrize("route", sorted(TABLE.keys() - {WS_ROUTE}), ids=lambda r: f"{r[0]} {r[1]}")
async def test_auth_matrix(secured: Any, route: tuple[str, str]) -> None:
    method, _ = route
    row = TABLE[route]
    for key, rank in KEYS:
        status, text = await _call(secured, method, row, key)
        assert status < 500, f"{key}: {status} {text}"
        for secret in SECRETS:
            assert secret not in text, f"{route} echoed an API key: {text[:300]}"
        if row.scope is None or rank >= RANK[row.scope]:
            assert status in row.ok, f"{route} with {key}: {status} {text[:300]}"
            continue
        expected = 401 if rank == 0 else 403
        assert status == expected, f"{route} with {key}: {status} {text[:300]}"
        assert msgspec.json.decode(text)["error"]["code"] == ("unauthorized" if expected == 401 else "forbidden")


async def test_health_ready_and_openapi_stay_public(secured: Any) -> None:
    for path in ("/health", "/ready", "/openapi.json"):
        assert (await secured.get(path)).status == 200


@pytest.mark.parametrize("require,host,status", [("true", "127.0.0.1", 401), ("false", "127.0.0.1", 200),
                                                 ("", "127.0.0.1", 200)])
async def test_metrics_scope_is_public_on_loopback_and_read_when_required(
        make_client: Any, tmp_path: Path, require: str, host: str, status: int) -> None:
    env = {**ENV, "S5VEC_HOST": host}
    if require:
        env["S5VEC_METRICS__REQUIRE_AUTH"] = require
    client = await make_client(env=env)
    assert (await client.get("/metrics")).status == status
    assert (await client.get("/metrics", headers=bearer(READ))).status == 200


def test_metrics_need_the_read_scope_beyond_loopback() -> None:
    assert load_config(env={**ENV, "S5VEC_HOST": "0.0.0.0"}).metrics_need_auth
    assert not load_config(env=ENV).metrics_need_auth


async def test_rejected_write_changes_nothing(secured: Any) -> None:
    resp = await secured.post(f"{API}/collections/v/vectors", json={"id": "x", "vector": [1, 0]},
                              headers=bearer(READ))
    assert resp.status == 403
    info = await (await secured.get(f"{API}/collections/v", headers=bearer(READ))).json()
    assert info["count"] == 3


async def test_malformed_authorization_header_is_401(secured: Any) -> None:
    for header in ("Basic abc", "Bearer", READ, f"Bearer  {WRONG}"):
        resp = await secured.get(f"{API}/collections", headers={"Authorization": header})
        assert resp.status == 401
        assert READ not in await resp.text() and WRONG not in await resp.text()


# ------------------------------------------------------------------ WebSocket
# message type -> (scope needed, frame, reply types that count as served once authorised)
WS_OPS: Final[dict[str, tuple[str | None, dict[str, Any], tuple[str, ...]]]] = {
    "ping": (None, {"type": "ping"}, ("pong",)),
    "auth": (None, {"type": "auth", "key": ADMIN}, ("authenticated",)),
    "upsert": ("write", {"type": "upsert", "collection": "v", "record": {"id": "w1", "vector": [1, 0]}}, ("result",)),
    "upsert_batch": ("write", {"type": "upsert_batch", "collection": "v",
                               "records": [{"id": "w2", "vector": [0, 1]}]}, ("result",)),
    "delete": ("write", {"type": "delete", "collection": "v", "ids": ["zz"]}, ("result",)),
    "search": ("read", {"type": "search", "collection": "v", "vector": [1, 0]}, ("result",)),
    "get": ("read", {"type": "get", "collection": "v", "ids": ["a"]}, ("result",)),
    "subscribe": ("read", {"type": "subscribe", "collections": ["v"], "sub": "s1"}, ("subscribed",)),
    "subscribe_query": ("read", {"type": "subscribe_query", "collection": "v", "vector": [1, 0], "k": 3, "sub": "q1"},
                        ("subscribed",)),
    "unsubscribe": ("read", {"type": "unsubscribe", "sub": "s1"}, ("unsubscribed", "error")),
}


def test_every_websocket_message_type_has_a_decided_scope() -> None:
    tags = {cls.__struct_config__.tag for cls in get_args(WsMessage)}
    assert tags == WS_OPS.keys(), f"WebSocket types without a row: {tags - WS_OPS.keys()}"


async def _ws_reply(ws: Any, frame_id: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return {"type": "closed", "code": ws.close_code}
            reply = msgspec.json.decode(msg.data)
            if reply.get("id") == frame_id:
                return reply


@pytest.mark.parametrize("via", ["header", "message"])
@pytest.mark.parametrize("key,rank", KEYS[2:], ids=["read", "write", "admin"])
async def test_websocket_matrix_for_valid_keys(secured: Any, key: str, rank: int, via: str) -> None:
    ws = await secured.ws_connect(f"{API}/ws", headers=bearer(key) if via == "header" else {})
    if via == "message":
        await ws.send_json({"type": "auth", "key": key, "id": "hello"})
        assert (await _ws_reply(ws, "hello"))["type"] == "authenticated"
    for op, (scope, frame, served) in WS_OPS.items():
        if op == "auth":
            frame = {**frame, "key": key}
        await ws.send_json({**frame, "id": op})
        reply = await _ws_reply(ws, op)
        text = msgspec.json.encode(reply).decode()
        assert all(secret not in text for secret in SECRETS), text
        if scope is None or rank >= RANK[scope]:
            assert reply["type"] in served, f"{op} with {key}: {reply}"
            if reply["type"] == "error":
                assert reply["error"]["code"] not in ("unauthorized", "forbidden"), reply
        else:
            assert reply["type"] == "error" and reply["error"]["code"] == "forbidden", f"{op} with {key}: {reply}"
    await ws.close()


async def test_websocket_upgrade_with_a_wrong_bearer_key_is_401(secured: Any) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await secured.ws_connect(f"{API}/ws", headers=bearer(WRONG))
    assert info.value.status == 401


@pytest.mark.parametrize("op", sorted(set(WS_OPS) - {"auth"}))
async def test_websocket_without_a_key_refuses_every_operation_and_closes(secured: Any, op: str) -> None:
    ws = await secured.ws_connect(f"{API}/ws")
    await ws.send_json({**WS_OPS[op][1], "id": op})
    reply = await _ws_reply(ws, op)
    assert reply["type"] == "error" and reply["error"]["code"] == "unauthorized"
    assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1008


async def test_websocket_auth_message_with_a_wrong_key_is_refused_without_echoing_it(secured: Any) -> None:
    ws = await secured.ws_connect(f"{API}/ws")
    await ws.send_json({"type": "auth", "key": WRONG, "id": 1})
    msg = await ws.receive(timeout=5)
    assert WRONG not in msg.data
    assert msgspec.json.decode(msg.data)["error"]["code"] == "unauthorized"
    assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1008
    # after a good auth, a later wrong key is refused but keeps the scope it had
    ws = await secured.ws_connect(f"{API}/ws", headers=bearer(READ))
    await ws.send_json({"type": "auth", "key": WRONG, "id": "again"})
    reply = await _ws_reply(ws, "again")
    assert reply["error"]["code"] == "unauthorized" and WRONG not in msgspec.json.encode(reply).decode()
    await ws.send_json({"type": "get", "collection": "v", "ids": ["a"], "id": "still"})
    assert (await _ws_reply(ws, "still"))["type"] == "result"
    await ws.close()
