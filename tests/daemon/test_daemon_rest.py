"""The REST API through the real app in process (aiohttp test client)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conftest import exact_top_k

API = "/api/v1"


async def create(client: Any, name: str = "videos", dimension: int = 3, **extra: Any) -> Any:
    resp = await client.post(f"{API}/collections", json={"name": name, "dimension": dimension, **extra})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def assert_error(resp: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if field is not None:
        assert body["error"].get("field") == field, body
    return body


async def test_health_reports_status_and_storage_mode(client: Any) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["storage"]["mode"] == "local"
    assert (await client.get("/ready")).status == 200


async def test_created_collection_is_listed_and_described(client: Any) -> None:
    await create(client, "videos", 3, metric="l2")
    listed = await (await client.get(f"{API}/collections")).json()
    assert [c["name"] for c in listed["collections"]] == ["videos"]
    info = await (await client.get(f"{API}/collections/videos")).json()
    assert info["dimension"] == 3 and info["metric"] == "l2" and info["count"] == 0


async def test_creating_an_identical_collection_again_is_idempotent(client: Any) -> None:
    await create(client)
    resp = await client.post(f"{API}/collections", json={"name": "videos", "dimension": 3})
    assert resp.status == 200


async def test_creating_a_conflicting_collection_is_409(client: Any) -> None:
    await create(client)
    resp = await client.post(f"{API}/collections", json={"name": "videos", "dimension": 4})
    await assert_error(resp, 409, "collection_exists")


@pytest.mark.parametrize("body,field", [
    ({"name": "Bad Name", "dimension": 3}, "name"),
    ({"name": "x" * 65, "dimension": 3}, "name"),
    ({"name": "ok", "dimension": 0}, "dimension"),
    ({"name": "ok", "dimension": 4097}, "dimension"),
    ({"name": "ok", "dimension": 3, "metric": "hamming"}, "metric"),
    ({"name": "ok", "dimension": 3, "schema": "nope"}, "schema"),
    ({"name": "ok", "dimension": "3"}, "dimension"),
    ({"name": "ok", "dimension": 3, "colour": "red"}, None),
])
async def test_invalid_collection_definitions_are_400_naming_the_field(client: Any, body: dict[str, Any],
                                                                       field: str | None) -> None:
    resp = await client.post(f"{API}/collections", json=body)
    await assert_error(resp, 400, "invalid_request", field)
    assert (await (await client.get(f"{API}/collections")).json())["collections"] == []


async def test_upserted_vector_is_found_and_fetched_with_metadata(client: Any) -> None:
    await create(client)
    resp = await client.post(f"{API}/collections/videos/vectors",
                             json={"id": "a", "vector": [1, 0, 0], "metadata": {"title": "Alpha"}})
    assert resp.status == 201 and (await resp.json())["id"] == "a"
    await client.post(f"{API}/collections/videos/vectors", json={"id": 7, "vector": [0, 1, 0]})
    found = await (await client.post(f"{API}/collections/videos/search",
                                     json={"vector": [0.9, 0.1, 0], "k": 2})).json()
    assert [r["id"] for r in found["results"]] == ["a", "7"]
    assert found["results"][0]["metadata"] == {"title": "Alpha"}
    assert 0.0 <= found["results"][1]["score"] <= found["results"][0]["score"] <= 1.0
    assert found["search_time_ms"] >= 0
    record = await (await client.get(f"{API}/collections/videos/vectors/a")).json()
    assert record["metadata"] == {"title": "Alpha"} and record["vector"] == [1.0, 0.0, 0.0]


async def test_upsert_replaces_the_previous_version_of_an_id(client: Any) -> None:
    await create(client)
    await client.post(f"{API}/collections/videos/vectors", json={"id": "a", "vector": [1, 0, 0], "metadata": {"v": 1}})
    await client.post(f"{API}/collections/videos/vectors", json={"id": "a", "vector": [0, 0, 1], "metadata": {"v": 2}})
    found = await (await client.post(f"{API}/collections/videos/search", json={"vector": [1, 0, 0], "k": 5})).json()
    assert [(r["id"], r["metadata"]) for r in found["results"]] == [("a", {"v": 2})]
    info = await (await client.get(f"{API}/collections/videos")).json()
    assert info["count"] == 1


async def test_deleted_vector_is_gone_from_get_and_search(client: Any) -> None:
    await create(client)
    for i, vec in enumerate(([1, 0, 0], [0, 1, 0])):
        await client.post(f"{API}/collections/videos/vectors", json={"id": str(i), "vector": vec})
    assert (await client.delete(f"{API}/collections/videos/vectors/0")).status == 200
    await assert_error(await client.get(f"{API}/collections/videos/vectors/0"), 404, "record_not_found")
    await assert_error(await client.delete(f"{API}/collections/videos/vectors/0"), 404, "record_not_found")
    found = await (await client.post(f"{API}/collections/videos/search", json={"vector": [1, 0, 0], "k": 5})).json()
    assert [r["id"] for r in found["results"]] == ["1"]


async def test_batch_reports_per_item_errors_and_keeps_the_good_items(client: Any) -> None:
    await create(client)
    resp = await client.post(f"{API}/collections/videos/vectors/batch", json={"vectors": [
        {"id": "ok1", "vector": [1, 0, 0]},
        {"id": "short", "vector": [1, 0]},
        {"id": "text", "vector": ["x", 0, 0]},
        {"vector": [0, 1, 0]},
        {"id": "big", "vector": [1e39, 0, 0]},
        {"id": "zero", "vector": [0, 0, 0]},
        {"id": "ok2", "vector": [0, 1, 0], "metadata": {"n": 2}},
    ]})
    assert resp.status == 200
    body = await resp.json()
    assert body["successful"] == 2 and body["failed"] == 5
    by_index = {e["index"]: e for e in body["errors"]}
    assert by_index[1]["error"]["code"] == "dimension_mismatch" and by_index[1]["id"] == "short"
    assert "vector" in by_index[2]["error"]["message"]
    assert "id" in by_index[3]["error"]["message"]
    assert "NaN or infinite" in by_index[4]["error"]["message"]
    assert "zero length" in by_index[5]["error"]["message"]
    info = await (await client.get(f"{API}/collections/videos")).json()
    assert info["count"] == 2


async def test_batch_larger_than_the_limit_is_rejected_whole(client: Any) -> None:
    await create(client, dimension=1)
    vectors = [{"id": str(i), "vector": [1.0]} for i in range(10_001)]
    resp = await client.post(f"{API}/collections/videos/vectors/batch", json={"vectors": vectors})
    await assert_error(resp, 400, "invalid_request", "vectors")
    assert (await (await client.get(f"{API}/collections/videos")).json())["count"] == 0


@pytest.mark.parametrize("payload,status,code", [
    (b"{not json", 400, "invalid_request"),
    (b"", 400, "invalid_request"),
    (b'{"vector": []}', 400, "invalid_request"),
    (b'{"id": "a", "vector": [1, 2]}', 422, "dimension_mismatch"),
    (b'{"id": "a", "vector": [1, 2, NaN]}', 400, "invalid_request"),
    (b'{"id": "a", "vector": [1, 2, 1e999]}', 400, "invalid_request"),
    (b'{"id": "a", "vector": [1, 2, 3], "metadata": [1]}', 400, "invalid_request"),
    (b'{"id": "", "vector": [1, 2, 3]}', 400, "invalid_request"),
    (b'{"id": true, "vector": [1, 2, 3]}', 400, "invalid_request"),
    (b'{"id": "a", "vector": [1, 2, 3], "timestamp": "yesterday"}', 400, "invalid_request"),
    (b'{"id": "a", "vector": [1, 2, 3], "extra": 1}', 400, "invalid_request"),
])
async def test_bad_upserts_get_a_clear_error_and_change_nothing(client: Any, payload: bytes, status: int,
                                                                code: str) -> None:
    await create(client)
    await client.post(f"{API}/collections/videos/vectors", json={"id": "keep", "vector": [1, 0, 0]})
    resp = await client.post(f"{API}/collections/videos/vectors", data=payload,
                             headers={"Content-Type": "application/json"})
    await assert_error(resp, status, code)
    info = await (await client.get(f"{API}/collections/videos")).json()
    assert info["count"] == 1
    assert (await client.get(f"{API}/collections/videos/vectors/a")).status == 404


async def test_too_long_id_and_too_large_metadata_are_rejected(client: Any) -> None:
    await create(client)
    resp = await client.post(f"{API}/collections/videos/vectors", json={"id": "x" * 257, "vector": [1, 0, 0]})
    await assert_error(resp, 400, "invalid_request", "id")
    resp = await client.post(f"{API}/collections/videos/vectors",
                             json={"id": "m", "vector": [1, 0, 0], "metadata": {"blob": "x" * 70_000}})
    await assert_error(resp, 400, "invalid_request", "metadata")


async def test_body_over_the_limit_is_413(make_client: Any) -> None:
    client = await make_client(env={"S5VEC_HTTP__MAX_BODY_BYTES": "2048"})
    await create(client)
    resp = await client.post(f"{API}/collections/videos/vectors",
                             json={"id": "a", "vector": [1, 0, 0], "metadata": {"pad": "x" * 4000}})
    await assert_error(resp, 413, "payload_too_large")


async def test_unknown_collection_and_route_are_404_in_the_error_shape(client: Any) -> None:
    await assert_error(await client.get(f"{API}/collections/nope"), 404, "collection_not_found")
    await assert_error(await client.post(f"{API}/collections/nope/search", json={"vector": [1]}),
                       404, "collection_not_found")
    await assert_error(await client.post(f"{API}/collections/nope/vectors", json={"id": "a", "vector": [1]}),
                       404, "collection_not_found")
    await assert_error(await client.get("/no/such/route"), 404, "not_found")
    await assert_error(await client.put("/health"), 405, "method_not_allowed")


@pytest.mark.parametrize("body,field", [
    ({"vector": [1, 0, 0], "k": 0}, "k"),
    ({"vector": [1, 0, 0], "k": 1001}, "k"),
    ({"vector": [1, 0, 0], "options": {"hnsw_ef": 0}}, "options.hnsw_ef"),
    ({"vector": [1, 0, 0], "options": {"bogus": 1}}, None),
    ({"vector": [1, 0, 0], "filter": {"genre": {"$regex": "x"}}}, "filter"),
    ({"vector": [1, 0, 0], "filter": {"$or": []}}, "filter"),
    ({"vector": []}, "vector"),
    ({"vector": [1e39, 0, 0]}, "vector"),
    ({"vector": [1e300, 0, 0]}, "vector"),
    ({"vector": [0, 0, 0]}, "vector"),
])
async def test_invalid_searches_are_400_naming_the_field(client: Any, body: dict[str, Any],
                                                          field: str | None) -> None:
    await create(client)
    await assert_error(await client.post(f"{API}/collections/videos/search", json=body), 400,
                       "invalid_request", field)


async def test_search_with_wrong_dimension_is_422(client: Any) -> None:
    await create(client)
    await assert_error(await client.post(f"{API}/collections/videos/search", json={"vector": [1, 0]}),
                       422, "dimension_mismatch")


async def test_search_filters_on_metadata_and_applies_score_threshold(client: Any) -> None:
    await create(client)
    rows = [("a", [1, 0, 0], {"genre": ["drama", "crime"], "views": 10}),
            ("b", [0.9, 0.1, 0], {"genre": ["comedy"], "views": 500}),
            ("c", [0, 1, 0], {"genre": ["drama"], "views": 50})]
    await client.post(f"{API}/collections/videos/vectors/batch", json={"vectors": [
        {"id": i, "vector": v, "metadata": m} for i, v, m in rows]})
    search = f"{API}/collections/videos/search"
    drama = await (await client.post(search, json={"vector": [1, 0, 0], "filter": {"genre": "drama"}})).json()
    assert [r["id"] for r in drama["results"]] == ["a", "c"]
    popular = await (await client.post(search, json={"vector": [1, 0, 0], "filter": {"views": {"$gte": 50}}})).json()
    assert [r["id"] for r in popular["results"]] == ["b", "c"]
    close = await (await client.post(search, json={"vector": [1, 0, 0], "options": {"score_threshold": 0.9}})).json()
    assert [r["id"] for r in close["results"]] == ["a", "b"]
    bare = await (await client.post(search, json={"vector": [1, 0, 0], "options": {"include_metadata": False,
                                                                                  "include_vector": True}})).json()
    assert "metadata" not in bare["results"][0] and len(bare["results"][0]["vector"]) == 3


async def test_seed_routes_use_a_default_collection_created_on_demand(client: Any) -> None:
    empty = await (await client.post(f"{API}/search", json={"vector": [1, 0], "k": 3})).json()
    assert empty["results"] == []
    resp = await client.post(f"{API}/vectors", json={"id": "v1", "vector": [1, 0], "metadata": {"t": 1}})
    assert resp.status == 201
    batch = await (await client.post(f"{API}/vectors/batch", json={"vectors": [{"id": "v2", "vector": [0, 1]}]})).json()
    assert batch["successful"] == 1
    found = await (await client.post(f"{API}/search", json={"vector": [1, 0.1], "k": 2,
                                                            "options": {"hnsw_ef": 32}})).json()
    assert [r["id"] for r in found["results"]] == ["v1", "v2"]
    assert (await (await client.get(f"{API}/vectors/v1")).json())["metadata"] == {"t": 1}
    assert (await client.delete(f"{API}/vectors/v1")).status == 200
    await assert_error(await client.get(f"{API}/vectors/v1"), 404, "record_not_found")
    info = await (await client.get(f"{API}/collections/default")).json()
    assert info["dimension"] == 2 and info["count"] == 1


async def test_video_nft_schema_validates_and_normalises_records(client: Any) -> None:
    await create(client, "nfts", 3, schema="video_nft")
    good = {"vector": [1, 0, 0], "metadata": {
        "address": "0xabc", "id": 42, "genre": ["sci-fi"], "type": "video",
        "mint_date_time": "2024-05-01T12:00:00Z", "attributes": [{"key": "runtime", "value": 120}]}}
    resp = await client.post(f"{API}/collections/nfts/vectors", json=good)
    assert resp.status == 201 and (await resp.json())["id"] == "0xabc:42"
    record = await (await client.get(f"{API}/collections/nfts/vectors/0xabc:42")).json()
    assert record["metadata"]["mintDateTime"] == "2024-05-01T12:00:00Z" and record["metadata"]["id"] == "42"
    found = await (await client.post(f"{API}/collections/nfts/search", json={
        "vector": [1, 0, 0], "filter": {"attributes.runtime": {"$gt": 100},
                                        "mintDateTime": {"$gte": "2024-01-01T00:00:00Z"}}})).json()
    assert [r["id"] for r in found["results"]] == ["0xabc:42"]
    for field, value in (("genre", "drama"), ("type", "movie"), ("mintDateTime", "May 1st"),
                         ("attributes", [{"value": 1}]), ("address", None)):
        bad = {"vector": [1, 0, 0], "metadata": {**good["metadata"], field: value}}
        bad["metadata"].pop("mint_date_time") if field == "mintDateTime" else None
        resp = await client.post(f"{API}/collections/nfts/vectors", json=bad)
        body = await assert_error(resp, 400, "invalid_request")
        assert field in body["error"]["field"], body
    resp = await client.post(f"{API}/collections/nfts/vectors", json={**good, "id": "other"})
    await assert_error(resp, 400, "invalid_request", "id")


async def test_dropping_a_collection_removes_it(client: Any) -> None:
    await create(client)
    assert (await client.delete(f"{API}/collections/videos")).status == 200
    await assert_error(await client.get(f"{API}/collections/videos"), 404, "collection_not_found")
    await assert_error(await client.delete(f"{API}/collections/videos"), 404, "collection_not_found")


async def test_openapi_document_lists_every_route(client: Any) -> None:
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    for path in ("/api/v1/collections/{c}/search", "/api/v1/search", "/api/v1/vectors/batch", "/health"):
        assert path in spec["paths"]
    assert "SearchIn" in spec["components"]["schemas"]


async def test_search_over_real_embeddings_matches_exact_neighbours(client: Any, minilm: Any) -> None:
    base = minilm.base[:2000]
    await create(client, "real", 384)
    for start in range(0, len(base), 100):
        resp = await client.post(f"{API}/collections/real/vectors/batch", json={"vectors": [
            {"id": str(i), "vector": base[i].tolist()} for i in range(start, start + 100)]})
        assert (await resp.json())["failed"] == 0
    hits = 0
    for query in minilm.queries[:50]:
        found = await (await client.post(f"{API}/collections/real/search",
                                         json={"vector": query.tolist(), "k": 10,
                                               "options": {"include_metadata": False}})).json()
        hits += len({int(r["id"]) for r in found["results"]} & set(exact_top_k(base, query, 10)))
    assert hits / 500 >= 0.95


async def test_checkpoint_then_reopen_keeps_every_record(make_client: Any, tmp_path: Any) -> None:
    data_dir = tmp_path / "persist"
    client = await make_client(data_dir=data_dir)
    await create(client)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 3)).astype(np.float32)
    await client.post(f"{API}/collections/videos/vectors/batch", json={"vectors": [
        {"id": str(i), "vector": v.tolist(), "metadata": {"i": i}} for i, v in enumerate(vectors)]})
    ckpt = await (await client.post(f"{API}/admin/checkpoint")).json()
    assert ckpt["manifest"] and ckpt["lsn"] >= 2
    await client.post(f"{API}/collections/videos/vectors", json={"id": "after", "vector": [1, 1, 1]})
    await client.delete(f"{API}/collections/videos/vectors/5")
    await client.close()
    reopened = await make_client(data_dir=data_dir)
    info = await (await reopened.get(f"{API}/collections/videos")).json()
    assert info["count"] == 300
    assert (await reopened.get(f"{API}/collections/videos/vectors/5")).status == 404
    record = await (await reopened.get(f"{API}/collections/videos/vectors/17")).json()
    assert record["metadata"] == {"i": 17}
    assert (await reopened.get(f"{API}/collections/videos/vectors/after")).status == 200


async def test_repeated_search_is_served_from_cache_until_a_write(client: Any) -> None:
    await create(client)
    await client.post(f"{API}/collections/videos/vectors", json={"id": "a", "vector": [1, 0, 0]})
    body = {"vector": [1, 0, 0], "k": 5}
    first = await (await client.post(f"{API}/collections/videos/search", json=body)).json()
    second = await (await client.post(f"{API}/collections/videos/search", json=body)).json()
    assert first["cached"] is False and second["cached"] is True
    assert second["results"] == first["results"]
    await client.post(f"{API}/collections/videos/vectors", json={"id": "b", "vector": [0.9, 0.1, 0]})
    third = await (await client.post(f"{API}/collections/videos/search", json=body)).json()
    assert third["cached"] is False and [r["id"] for r in third["results"]] == ["a", "b"]
    await client.patch(f"{API}/collections/videos/vectors/b", json={"metadata": {"x": 1}})
    fourth = await (await client.post(f"{API}/collections/videos/search", json=body)).json()
    assert fourth["cached"] is False and fourth["results"][1]["metadata"] == {"x": 1}


async def test_query_cache_can_be_turned_off(make_client: Any) -> None:
    client = await make_client(env={"S5VEC_HTTP__QUERY_CACHE_ENTRIES": "0"})
    await create(client)
    await client.post(f"{API}/collections/videos/vectors", json={"id": "a", "vector": [1, 0, 0]})
    for _ in range(2):
        body = await (await client.post(f"{API}/collections/videos/search", json={"vector": [1, 0, 0]})).json()
        assert body["cached"] is False
