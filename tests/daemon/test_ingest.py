"""Streamed NDJSON ingest through the real app in process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from s5vec.daemon import ingest

API = "/api/v1"


async def create(client: Any, dimension: int = 3) -> None:
    resp = await client.post(f"{API}/collections", json={"name": "videos", "dimension": dimension})
    assert resp.status == 201


async def test_ndjson_lines_are_upserted_and_totals_reported(client: Any) -> None:
    await create(client)
    body = "\n".join(json.dumps({"id": f"r{i}", "vector": [1, i, 0], "metadata": {"i": i}}) for i in range(10))
    resp = await client.post(f"{API}/collections/videos/ingest", data=body.encode(),
                             headers={"Content-Type": "application/x-ndjson"})
    assert resp.status == 200
    report = await resp.json()
    assert report == {"lines": 10, "successful": 10, "failed": 0, "batches": 1, "errors": [],
                      "errors_truncated": False}
    got = await (await client.get(f"{API}/collections/videos/vectors/r7")).json()
    assert got["metadata"] == {"i": 7}


async def test_bad_lines_are_reported_by_number_and_do_not_stop_the_good_ones(client: Any) -> None:
    await create(client)
    lines = [
        json.dumps({"id": "a", "vector": [1, 0, 0]}),
        "{not json",
        "",
        json.dumps({"id": "b", "vector": [1, 0]}),
        json.dumps({"id": "c", "vector": [0, 0, 0]}),
        json.dumps({"id": "d", "vector": [0, 1, 0], "colour": "red"}),
        json.dumps({"id": "e", "vector": [0, 0, 1]}),
    ]
    resp = await client.post(f"{API}/collections/videos/ingest", data="\n".join(lines).encode())
    report = await resp.json()
    assert report["lines"] == 6 and report["successful"] == 2 and report["failed"] == 4
    assert [(e["line"], e["error"]["code"]) for e in report["errors"]] == [
        (2, "invalid_request"), (4, "dimension_mismatch"), (5, "invalid_request"), (6, "invalid_request")]
    assert report["errors"][1]["id"] == "b"
    stats = await (await client.get(f"{API}/collections/videos")).json()
    assert stats["count"] == 2


async def test_a_long_stream_is_applied_in_several_durable_batches(client: Any) -> None:
    await create(client, dimension=8)
    rng = np.random.default_rng(0)
    total = ingest.BATCH_LINES * 2 + 500

    async def body() -> AsyncIterator[bytes]:  # streamed in small pieces, never one buffer
        for start in range(0, total, 100):
            chunk = "".join(json.dumps({"id": f"r{i}", "vector": rng.normal(size=8).tolist()}) + "\n"
                            for i in range(start, min(total, start + 100)))
            yield chunk.encode()

    resp = await client.post(f"{API}/collections/videos/ingest", data=body())
    report = await resp.json()
    assert report["successful"] == total and report["failed"] == 0 and report["batches"] == 3
    stats = await (await client.get(f"{API}/collections/videos")).json()
    assert stats["count"] == total


async def test_an_overlong_line_is_an_error_and_the_next_line_still_counts(client: Any, monkeypatch: Any) -> None:
    await create(client)
    monkeypatch.setattr(ingest, "MAX_LINE_BYTES", 200)
    body = (json.dumps({"id": "big", "vector": [1, 0, 0], "metadata": {"x": "y" * 500}}) + "\n"
            + json.dumps({"id": "ok", "vector": [1, 0, 0]}) + "\n")
    report = await (await client.post(f"{API}/collections/videos/ingest", data=body.encode())).json()
    assert report["successful"] == 1 and report["errors"][0]["line"] == 1
    assert "longer than" in report["errors"][0]["error"]["message"]


async def test_ingest_into_a_missing_collection_is_404(client: Any) -> None:
    resp = await client.post(f"{API}/collections/nope/ingest", data=b'{"id": "a", "vector": [1]}\n')
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "collection_not_found"


async def test_ingested_records_reach_subscribers(client: Any) -> None:
    await create(client)
    async with client.ws_connect(f"{API}/ws") as ws:
        await ws.send_json({"type": "subscribe", "id": 1})
        assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
        body = b'{"id": "a", "vector": [1, 0, 0]}\n{"id": "b", "vector": [0, 1, 0]}\n'
        assert (await client.post(f"{API}/collections/videos/ingest", data=body)).status == 200
        frame = await ws.receive_json(timeout=10)
        assert [e["record"]["id"] for e in frame["events"]] == ["a", "b"]


async def test_ingest_needs_the_write_scope(make_client: Any) -> None:
    read_key = "r" * 20
    client = await make_client({"S5VEC_API_KEYS": f"{read_key}:read"})
    resp = await client.post(f"{API}/collections/videos/ingest", data=b"{}\n",
                             headers={"Authorization": f"Bearer {read_key}"})
    assert resp.status == 403
