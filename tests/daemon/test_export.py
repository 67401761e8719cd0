"""``GET /api/v1/collections/{c}/export``: every record as NDJSON in id order, across both
tiers, through the real app in process."""

from __future__ import annotations

import json
import time
from typing import Any

API = "/api/v1"
DAY = 86_400


async def export(client: Any, name: str, query: str = "") -> tuple[int, list[dict[str, Any]]]:
    resp = await client.get(f"{API}/collections/{name}/export{query}")
    text = await resp.text()
    if resp.status != 200:
        return resp.status, [json.loads(text)]
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    assert text == "" or text.endswith("\n")
    return resp.status, [json.loads(line) for line in text.splitlines()]


async def test_export_streams_both_tiers_in_id_order_in_the_ingest_format(client: Any) -> None:
    resp = await client.post(f"{API}/collections", json={"name": "v", "dimension": 2, "metric": "l2",
                                                         "segment_records": 40})
    assert resp.status == 201
    now = time.time()
    records = [{"id": f"r{i:04d}", "vector": [float(i), 1.0], "metadata": {"i": i},
                "timestamp": now - (60 * DAY if i % 2 else 0)} for i in range(2500)]  # odd ones are historical
    resp = await client.post(f"{API}/collections/v/vectors/batch", json={"vectors": records})
    assert (await resp.json())["failed"] == 0
    moved = await (await client.post(f"{API}/admin/migrate")).json()
    assert moved["moved"] == 1250 and moved["segments"] >= 1
    assert (await client.delete(f"{API}/collections/v/vectors/r0003")).status == 200  # a historical tombstone
    assert (await client.delete(f"{API}/collections/v/vectors/r0004")).status == 200

    status, lines = await export(client, "v")
    expected = [r for r in records if r["id"] not in ("r0003", "r0004")]
    assert status == 200 and [line["id"] for line in lines] == [r["id"] for r in expected]
    assert lines[4] == {"id": "r0006", "metadata": {"i": 6}, "timestamp": records[6]["timestamp"], "vector": [6.0, 1.0]}
    assert lines[5]["timestamp"] == records[7]["timestamp"]  # a historical one

    status, tail = await export(client, "v", "?after=r2497&include_vector=false")
    assert [line["id"] for line in tail] == ["r2498", "r2499"] and "vector" not in tail[0]

    # what export writes, ingest reads: the round trip gives the same records
    resp = await client.post(f"{API}/collections", json={"name": "copy", "dimension": 2, "metric": "l2"})
    assert resp.status == 201
    body = "".join(json.dumps(line) + "\n" for line in lines)
    report = await (await client.post(f"{API}/collections/copy/ingest", data=body)).json()
    assert report["successful"] == len(lines) and report["failed"] == 0
    assert (await export(client, "copy"))[1] == lines


async def test_export_of_an_empty_or_missing_collection(client: Any) -> None:
    resp = await client.post(f"{API}/collections", json={"name": "empty", "dimension": 2})
    assert resp.status == 201
    assert await export(client, "empty") == (200, [])
    status, (error,) = await export(client, "nope")
    assert status == 404 and error["error"]["code"] == "collection_not_found"
    status, (error,) = await export(client, "empty", "?include_vector=maybe")
    assert status == 400 and error["error"]["field"] == "include_vector"


async def test_export_route_is_in_the_openapi_document(client: Any) -> None:
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    assert "get" in paths["/api/v1/collections/{c}/export"]
