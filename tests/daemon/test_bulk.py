"""POST /api/v1/collections/{c}/bulk (Arrow IPC streams) through the real app in process."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from s5vec.client.bulk import ARROW_STREAM, arrow_stream, arrow_table
from s5vec.daemon.app import SERVICES
from s5vec.engine import bulk as engine_bulk

API = "/api/v1"
DAY = 86_400.0


async def create(client: Any, dimension: int = 8, metric: str = "cosine") -> None:
    resp = await client.post(f"{API}/collections", json={"name": "videos", "dimension": dimension, "metric": metric})
    assert resp.status == 201


def rows(n: int, dimension: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dimension)).astype(np.float32)


async def post(client: Any, body: bytes, content_type: str = ARROW_STREAM, query: str = "") -> Any:
    return await client.post(f"{API}/collections/videos/bulk{query}", data=body,
                             headers={"Content-Type": content_type})


async def stored(client: Any) -> list[dict[str, Any]]:
    resp = await client.get(f"{API}/collections/videos/export")
    text = await resp.text()
    import json
    return [json.loads(line) for line in text.splitlines() if line]


async def test_a_bulk_body_is_stored_and_searchable_with_metadata_and_timestamps(client: Any) -> None:
    await create(client)
    vectors = rows(300)
    stamps = np.full(300, 1.7e9)
    body = arrow_stream(arrow_table([f"r{i}" for i in range(300)], vectors, [{"i": i} for i in range(300)], stamps))
    resp = await post(client, body, query="?rows=300")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"records": 300, "historical": 300, "wal_records": 1}
    got = await (await client.get(f"{API}/collections/videos/vectors/r7")).json()
    assert got["metadata"] == {"i": 7} and got["timestamp"] == 1.7e9
    hits = await (await client.post(f"{API}/collections/videos/search",
                                    json={"vector": vectors[42].tolist(), "k": 1})).json()
    assert hits["results"][0]["id"] == "r42"


async def test_struct_metadata_integer_ids_and_arrow_timestamps_are_read(client: Any) -> None:
    await create(client)
    vectors = rows(3)
    table = pa.table({
        "id": pa.array([1, 2, 3]),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1).astype(np.float64)), 8),
        "metadata": pa.array([{"genre": "drama", "views": 1}, {"genre": None, "views": 2}, None]),
        "timestamp": pa.array([1_700_000_000_000, None, 0], pa.timestamp("ms")),
    })
    resp = await post(client, arrow_stream(table))
    assert resp.status == 200, await resp.text()
    by_id = {r["id"]: r for r in await stored(client)}
    assert by_id["1"]["metadata"] == {"genre": "drama", "views": 1}
    assert by_id["2"]["metadata"] == {"views": 2} and by_id["3"]["metadata"] == {}
    assert by_id["1"]["timestamp"] == 1.7e9 and by_id["3"]["timestamp"] == 0.0
    assert abs(by_id["2"]["timestamp"] - time.time()) < 60


async def test_a_large_body_becomes_several_wal_records_in_one_request(client: Any, monkeypatch: Any) -> None:
    await create(client)
    monkeypatch.setattr(engine_bulk, "WAL_RECORD_BYTES", 100 * 8 * 4)
    body = arrow_stream(arrow_table([f"r{i}" for i in range(1050)], rows(1050)))
    resp = await post(client, body)
    assert (await resp.json())["wal_records"] == 11
    stats = await (await client.get(f"{API}/collections/videos")).json()
    assert stats["count"] == 1050


@pytest.mark.parametrize(("make", "status", "code", "words"), [
    (lambda: arrow_stream(arrow_table(["a", "b"], rows(2, 5))), 422, "dimension_mismatch", "5 dimensions"),
    (lambda: arrow_stream(arrow_table(["a", "b"], np.array([[1.0] * 8, [np.nan] * 8], np.float32))), 400,
     "invalid_request", "rows[1].vector"),
    (lambda: arrow_stream(arrow_table(["a", ""], rows(2))), 400, "invalid_request", "rows[1].id"),
    (lambda: arrow_stream(arrow_table(["a", "x" * 300], rows(2))), 400, "invalid_request", "rows[1].id"),
    (lambda: arrow_stream(pa.table({"id": ["a", "b"], "vector": pa.FixedSizeListArray.from_arrays(
        pa.array(rows(2).reshape(-1)), 8), "metadata": pa.array(['{"ok": 1}', "[1, 2]"])})), 400, "invalid_request",
     "rows[1].metadata"),
    (lambda: arrow_stream(pa.table({"id": ["a", "b"], "vector": pa.FixedSizeListArray.from_arrays(
        pa.array(rows(2).reshape(-1)), 8), "metadata": pa.array(['{"ok": 1}', "{broken"])})), 400, "invalid_request",
     "is not JSON"),
    (lambda: arrow_stream(arrow_table(["a", "b"], rows(2), timestamps=["2024-01-01T00:00:00Z", "yesterday"])), 400,
     "invalid_request", "rows[1].timestamp"),
    (lambda: arrow_stream(pa.table({"id": ["a"], "vector": pa.FixedSizeListArray.from_arrays(
        pa.array(rows(1).reshape(-1)), 8), "title": ["x"]})), 400, "invalid_request", "'title'"),
    (lambda: arrow_stream(pa.table({"id": ["a"]})), 400, "invalid_request", "'vector' is missing"),
    (lambda: arrow_stream(arrow_table(["a", "b"], rows(2)))[:-40], 400, "invalid_request", "Arrow IPC stream"),
    (lambda: b"not arrow at all", 400, "invalid_request", "Arrow IPC stream"),
])
async def test_bad_bodies_are_refused_by_name_and_store_nothing(client: Any, make: Any, status: int, code: str,
                                                                 words: str) -> None:
    await create(client)
    good = arrow_stream(arrow_table(["keep"], rows(1, seed=9), [{"v": 1}]))
    assert (await post(client, good)).status == 200
    before = await stored(client)
    resp = await post(client, make())
    assert resp.status == status, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == code and words in error["message"] + str(error.get("field")), error
    assert await stored(client) == before


async def test_wrong_content_type_is_415_a_cut_stream_is_caught_by_rows_and_too_large_is_413(make_client: Any) -> None:
    client = await make_client(env={"S5VEC_HTTP__MAX_BODY_BYTES": "4096"})
    await create(client)
    body = arrow_stream(arrow_table(["a", "b"], rows(2)))
    resp = await post(client, body, content_type="application/json")
    assert resp.status == 415 and (await resp.json())["error"]["code"] == "unsupported_media_type"
    resp = await post(client, body, query="?rows=3")
    assert resp.status == 400 and "rows=3" in (await resp.json())["error"]["message"]
    resp = await post(client, arrow_stream(arrow_table([str(i) for i in range(200)], rows(200))))
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "payload_too_large"
    assert await stored(client) == []


async def test_historical_rows_are_parked_never_graphed_and_migrated(client: Any) -> None:
    await create(client)
    now = time.time()
    stamps = np.where(np.arange(400) < 300, now - 30 * DAY, now)
    vectors = rows(400)
    resp = await post(client, arrow_stream(arrow_table([f"r{i}" for i in range(400)], vectors, None, stamps)))
    assert await resp.json() == {"records": 400, "historical": 300, "wal_records": 1}
    db = client.server.app[SERVICES].db
    await db.index_round()
    coll = db.collection("videos")
    assert coll.recent.hnsw_live == 100  # only the recent rows entered the graph
    assert db.collection("videos").recent.hnsw.get_current_count() == 100
    await db.migrate()
    stats = await (await client.get(f"{API}/collections/videos")).json()
    assert stats["historical"] == 300 and stats["recent"] == 100 and stats["indexed"] == 100
    assert coll.recent.hnsw.get_current_count() == 100
    hits = await (await client.post(f"{API}/collections/videos/search",
                                    json={"vector": vectors[5].tolist(), "k": 1})).json()
    assert hits["results"][0]["id"] == "r5"


async def test_bulk_writes_replay_from_the_wal_to_the_same_records(make_client: Any, tmp_path: Any) -> None:
    data_dir = tmp_path / "replay"
    client = await make_client(data_dir=data_dir)
    await create(client)
    now = time.time()
    stamps = np.where(np.arange(500) % 2 == 0, now - 30 * DAY, now)
    body = arrow_stream(arrow_table([f"r{i}" for i in range(500)], rows(500), [{"i": i} for i in range(500)],
                                    stamps))
    assert (await post(client, body)).status == 200
    before = await stored(client)
    db = client.server.app[SERVICES].db
    await db.close(checkpoint=False)  # as after a crash: only the WAL holds the load
    await client.close()
    again = await make_client(data_dir=data_dir)
    assert await stored(again) == before
    db = again.server.app[SERVICES].db
    await db.index_round()
    assert db.collection("videos").recent.hnsw_live == 250
