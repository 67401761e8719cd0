"""``POST /api/v1/collections/{c}/vectors/query``: ``GET .../vectors`` with its parameters in a
JSON body, so a large filter needs no query string (whose request line is limited to 8,190
bytes); and errors from ``/mcp``'s own limits in the error shape too."""

from __future__ import annotations

import io
import json
from typing import Any

from s5vec.client import AsyncClient, Client

API = "/api/v1"
READ_KEY = "r" * 20
WRITE_KEY = "w" * 20
IDS = [f"video-{i:05d}" for i in range(1000)]
BIG = {"$or": [{"genre": "drama"}, {"n": {"$in": list(range(100_000, 101_000))}}]}  # 1,000-value $in


async def filled(client: Any, headers: dict[str, str] | None = None) -> None:
    resp = await client.post(f"{API}/collections", json={"name": "c", "dimension": 2}, headers=headers)
    assert resp.status == 201
    records = [{"id": f"r{i:03d}", "vector": [1.0, float(i)],
                "metadata": {"n": i, "genre": "drama" if i % 3 else "news"}} for i in range(300)]
    resp = await client.post(f"{API}/collections/c/vectors/batch", json={"vectors": records}, headers=headers)
    assert (await resp.json())["failed"] == 0


async def test_a_filter_too_large_for_the_url_is_a_json_414_and_works_in_the_body_of_vectors_query(
        client: Any) -> None:
    await filled(client)
    big = {"n": {"$in": list(range(100, 250)) + [f"pad-{i:06d}" for i in range(850)]}}  # 1,000 values
    resp = await client.get(f"{API}/collections/c/vectors", params={"filter": json.dumps(big), "limit": "1000"})
    assert resp.status == 414 and resp.content_type == "application/json"
    assert (await resp.json())["error"]["code"] == "uri_too_long"

    resp = await client.post(f"{API}/collections/c/vectors/query", json={"filter": big, "limit": 1000})
    page = await resp.json()
    assert resp.status == 200, page
    assert page["total"] == 150 and sorted(r["metadata"]["n"] for r in page["records"]) == list(range(100, 250))


async def test_vectors_query_answers_exactly_what_the_get_list_route_answers(client: Any) -> None:
    await filled(client)
    spec = {"genre": "drama", "n": {"$lt": 200}}
    for params in ({"limit": 7, "offset": 5, "include_vector": True}, {"limit": 1000}, {}):
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        got = await (await client.get(f"{API}/collections/c/vectors",
                                      params={"filter": json.dumps(spec), **query})).json()
        posted = await (await client.post(f"{API}/collections/c/vectors/query", json={"filter": spec, **params})).json()
        assert posted == got and got["count"] > 0
    everything = await (await client.post(f"{API}/collections/c/vectors/query", json={})).json()
    assert everything["total"] == 300 and everything["count"] == 100


async def test_vectors_query_rejects_bad_bodies_naming_the_field(client: Any) -> None:
    await filled(client)
    for body, field in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset"),
                        ({"filter": [1]}, "filter"), ({"filter": {"n": {"$nope": 1}}}, None)):
        resp = await client.post(f"{API}/collections/c/vectors/query", json=body)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "invalid_request", (body, error)
        if field:
            assert error["field"] == field, (body, error)
    resp = await client.post(f"{API}/collections/nope/vectors/query", json={})
    assert resp.status == 404


async def test_vectors_query_needs_only_the_read_scope(make_client: Any) -> None:
    client = await make_client(env={"S5VEC_API_KEYS": f"{READ_KEY}:read;{WRITE_KEY}:write"})
    await filled(client, {"Authorization": f"Bearer {WRITE_KEY}"})
    resp = await client.post(f"{API}/collections/c/vectors/query", json={"limit": 1},
                             headers={"Authorization": f"Bearer {READ_KEY}"})
    assert resp.status == 200, await resp.text()
    assert (await client.post(f"{API}/collections/c/vectors/query", json={})).status == 401


async def test_the_python_clients_send_a_large_find_filter_in_the_body(client: Any) -> None:
    await filled(client)
    url = str(client.make_url("")).rstrip("/")
    async with AsyncClient(url) as aio:
        found = await aio.find("c", BIG, limit=1000)
        assert found.total == 200 and {r.metadata["genre"] for r in found.records} == {"drama"}
        small = await aio.find("c", {"genre": "news"}, limit=5, offset=2)
        assert small.total == 100 and len(small.records) == 5


def test_the_sync_client_finds_with_a_large_filter_too(live: Any) -> None:
    with Client(live.url) as sync:
        sync.create_collection("big_filter", 2)
        sync.upsert_batch("big_filter", [{"id": f"v{i}", "vector": [1.0, 0.0], "metadata": {"n": i}}
                                         for i in range(50)])
        found = sync.find("big_filter", {"n": {"$in": list(range(10, 1010))}}, limit=100)
        assert found.total == 40


async def test_an_mcp_body_over_the_sdk_limit_is_a_413_in_the_error_shape(client: Any) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * (5 << 20)}}).encode()
    async def chunked() -> Any:
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]

    for data in (io.BytesIO(body), chunked()):  # with a Content-Length, and without one
        resp = await client.post("/mcp", data=data, headers={"Accept": "application/json, text/event-stream",
                                                             "Content-Type": "application/json"})
        assert resp.status == 413 and resp.content_type == "application/json"
        error = (await resp.json())["error"]
        assert error["code"] == "payload_too_large" and error["message"]
