"""CORS: off by default, configurable origins, real preflights; the keyless browser guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from s5vec.daemon.config import ConfigError, load_config

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
KEY = "cors-test-key-0123456789"
KEYS = {"S5VEC_API_KEYS": f"{KEY}:admin"}
AUTH = {"Authorization": f"Bearer {KEY}"}


def preflight(origin: str, method: str = "POST", headers: str = "authorization, content-type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


def cors_headers(resp: Any) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.lower().startswith("access-control-")}


async def test_cors_is_off_by_default_no_headers_and_no_preflight_answer(make_client: Any) -> None:
    client = await make_client(env=KEYS)
    resp = await client.get("/api/v1/collections", headers={**AUTH, "Origin": APP})
    assert resp.status == 200 and cors_headers(resp) == {}
    resp = await client.options("/api/v1/collections", headers=preflight(APP))
    assert resp.status in (401, 405) and cors_headers(resp) == {}
    resp = await client.get("/health", headers={"Origin": APP})
    assert cors_headers(resp) == {}


async def test_preflight_from_an_allowed_origin_gets_the_allow_headers(make_client: Any) -> None:
    client = await make_client(env={**KEYS, "S5VEC_CORS_ORIGINS": f"{APP}, http://localhost:5173"})
    for path in ("/api/v1/collections/c/search", "/api/v1/stream/updates", "/mcp", "/api/v1/collections/c/vectors/x"):
        resp = await client.options(path, headers=preflight(APP, "DELETE" if path.endswith("/x") else "POST"))
        assert resp.status == 204, path
        headers = cors_headers(resp)
        assert headers["Access-Control-Allow-Origin"] == APP
        assert resp.headers["Vary"] == "Origin"
        assert {"POST", "GET", "DELETE", "PATCH"} <= {m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")}
        allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "last-event-id", "mcp-session-id"} <= allowed
        assert headers["Access-Control-Max-Age"] == "600"
        assert "Access-Control-Allow-Credentials" not in headers


async def test_actual_responses_to_an_allowed_origin_carry_the_origin_errors_included(make_client: Any) -> None:
    client = await make_client(env={**KEYS, "S5VEC_CORS_ORIGINS": APP})
    resp = await client.get("/api/v1/collections", headers={**AUTH, "Origin": APP})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP and "Origin" in resp.headers["Vary"]
    resp = await client.get("/api/v1/collections", headers={"Origin": APP})  # no key: the page may read the 401
    assert resp.status == 401 and resp.headers["Access-Control-Allow-Origin"] == APP
    resp = await client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                             headers={**AUTH, "Origin": APP, "Accept": "application/json, text/event-stream"})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == APP


async def test_sse_stream_carries_cors_headers(make_client: Any) -> None:
    client = await make_client(env={**KEYS, "S5VEC_CORS_ORIGINS": APP})
    async with client.get("/api/v1/stream/updates", headers={**AUTH, "Origin": APP}) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Access-Control-Allow-Origin"] == APP


async def test_a_disallowed_origin_gets_no_cors_headers_and_a_403_preflight(make_client: Any) -> None:
    client = await make_client(env={**KEYS, "S5VEC_CORS_ORIGINS": APP})
    resp = await client.options("/api/v1/collections", headers=preflight(OTHER))
    assert resp.status == 403 and cors_headers(resp) == {}
    resp = await client.get("/api/v1/collections", headers={**AUTH, "Origin": OTHER})
    assert resp.status == 200 and cors_headers(resp) == {}
    assert "Origin" in resp.headers["Vary"]  # a shared cache must not serve one origin's answer to another
    resp = await client.get("/api/v1/collections", headers={**AUTH, "Origin": APP + ".evil.net"})
    assert cors_headers(resp) == {}


async def test_wildcard_origin_echoes_the_origin_and_credentials_only_when_configured(make_client: Any,
                                                                                      tmp_path: Path) -> None:
    client = await make_client(env={**KEYS, "S5VEC_CORS_ORIGINS": "*"})
    resp = await client.options("/api/v1/collections", headers=preflight(OTHER, "GET"))
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == OTHER
    assert "Access-Control-Allow-Credentials" not in resp.headers
    client = await make_client(env={**KEYS, "S5VEC_CORS_ORIGINS": APP, "S5VEC_CORS__ALLOW_CREDENTIALS": "true",
                                    "S5VEC_CORS__MAX_AGE_S": "60"}, data_dir=tmp_path / "other")
    resp = await client.options("/api/v1/collections", headers=preflight(APP, "GET"))
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Access-Control-Max-Age"] == "60"
    resp = await client.get("/api/v1/collections", headers={**AUTH, "Origin": APP})
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"


def test_cors_settings_come_from_toml_and_bad_values_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[cors]\nallow_origins = ["https://a.example", "http://localhost:3000"]\nmax_age_s = 30\n')
    config = load_config(path)
    assert config.cors.allow_origins == ("https://a.example", "http://localhost:3000")
    assert config.cors.max_age_s == 30
    assert load_config().cors.allow_origins == ()
    bad = [({"S5VEC_CORS_ORIGINS": "https://a.example/path"}, r"cors\.allow_origins\[0\]"),
           ({"S5VEC_CORS_ORIGINS": "a.example"}, r"cors\.allow_origins\[0\]"),
           ({"S5VEC_CORS_ORIGINS": "*", **KEYS, "S5VEC_CORS__ALLOW_CREDENTIALS": "1"}, "cors.allow_credentials"),
           ({"S5VEC_CORS_ORIGINS": "*, https://a.example", **KEYS}, "cors.allow_origins"),
           ({"S5VEC_CORS_ORIGINS": "*"}, r"cors\.allow_origins: .*without auth\.keys")]
    for env, match in bad:
        with pytest.raises(ConfigError, match=match):
            load_config(env=env)


async def test_keyless_daemon_refuses_web_pages_of_other_origins_and_rebound_hosts(make_client: Any) -> None:
    client = await make_client()
    body = {"name": "c", "dimension": 2}
    # a "simple" cross-origin POST (no preflight) from a page must not write
    resp = await client.post("/api/v1/collections", data=b'{"name": "c", "dimension": 2}',
                             headers={"Origin": OTHER, "Content-Type": "text/plain"})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "origin_not_allowed"
    resp = await client.get("/api/v1/collections", headers={"Host": "rebound.example.net:7533"})
    assert resp.status == 421
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # no CORS for WebSockets: the guard
        await client.ws_connect("/api/v1/ws", headers={"Origin": OTHER})
    assert refused.value.status == 403
    assert (await client.get("/api/v1/collections")).status == 200  # no Origin: not a browser
    resp = await client.post("/api/v1/collections", json=body, headers={"Origin": "http://localhost:5173"})
    assert resp.status == 201  # a page served from loopback is local software
    assert (await (await client.get("/api/v1/collections")).json())["collections"][0]["name"] == "c"


async def test_keyless_daemon_admits_a_listed_cors_origin(make_client: Any) -> None:
    client = await make_client(env={"S5VEC_CORS_ORIGINS": APP})
    resp = await client.options("/api/v1/collections", headers=preflight(APP))
    assert resp.status == 204
    resp = await client.post("/api/v1/collections", json={"name": "c", "dimension": 2}, headers={"Origin": APP})
    assert resp.status == 201 and resp.headers["Access-Control-Allow-Origin"] == APP
    resp = await client.get("/api/v1/collections", headers={"Origin": OTHER})
    assert resp.status == 403 and cors_headers(resp) == {}


async def test_with_api_keys_origin_does_not_matter_the_key_does(make_client: Any) -> None:
    client = await make_client(env=KEYS)
    resp = await client.get("/api/v1/collections", headers={"Origin": OTHER})
    assert resp.status == 401
    ws = await client.ws_connect("/api/v1/ws", headers={"Origin": OTHER})
    await ws.send_json({"type": "ping", "id": 1})
    reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "error" and reply["error"]["code"] == "unauthorized"
    await ws.close()
