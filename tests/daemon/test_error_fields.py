"""Every 400 names the field it is about, and an unknown field suggests the one meant
(an alias table for names other vector databases use, difflib for typos)."""

from __future__ import annotations

from typing import Any

import pytest

API = "/api/v1"


async def collection(client: Any) -> None:
    assert (await client.post(f"{API}/collections", json={"name": "v", "dimension": 2})).status == 201
    assert (await client.post(f"{API}/collections/v/vectors", json={"id": "a", "vector": [1, 0]})).status == 201


@pytest.mark.parametrize("path, body, field, message", [
    (f"{API}/collections", {"name": "w"}, "dimension", "missing required field 'dimension'"),
    (f"{API}/collections/v/search", {"vector": [1, 0], "top_k": 3}, "top_k",
     "unknown field 'top_k'; did you mean 'k'?"),
    (f"{API}/collections/v/search", {"vector": [1, 0], "filters": {"a": 1}}, "filters",
     "unknown field 'filters'; did you mean 'filter'?"),
    (f"{API}/collections/v/search", {"vector": [1, 0], "ef": 50}, "ef",
     "unknown field 'ef'; did you mean 'options.hnsw_ef'?"),
    (f"{API}/collections/v/search", {"vector": [1, 0], "options": {"ef": 50}}, "options.ef",
     "unknown field 'options.ef'; did you mean 'options.hnsw_ef'?"),
    (f"{API}/collections/v/search", {"vector": [1, 0], "filtr": {"a": 1}}, "filtr",
     "unknown field 'filtr'; did you mean 'filter'?"),
    (f"{API}/collections/v/vectors/delete", {"filters": {"a": 1}}, "filters",
     "unknown field 'filters'; did you mean 'filter'?"),
    (f"{API}/collections", {"name": "w", "dimension": 2, "hnsw": {"M": 8}}, "hnsw.M",
     "unknown field 'hnsw.M'; did you mean 'hnsw.m'?"),
    (f"{API}/collections/v/vectors/batch", [{"id": "b", "vector": [0, 1]}], "vectors",
     'the body must be a JSON object {"vectors": [...]}, not a bare array; wrap the array in it'),
    (f"{API}/collections/v/vectors", {"id": "b", "vector": [0, 1], "colour": "red"}, "colour",
     "unknown field 'colour'; known fields: vector, id, metadata, timestamp, text"),
    (f"{API}/collections/v/search", [1, 0], "body", "body: Expected `object`, got `array`"),
])
async def test_a_bad_body_is_a_400_naming_the_field_and_the_field_meant(client: Any, path: str, body: Any,
                                                                        field: str, message: str) -> None:
    await collection(client)
    resp = await client.post(path, json=body)
    reply = await resp.json()
    assert resp.status == 400, reply
    assert reply["error"] == {"code": "invalid_request", "message": message, "field": field}
    assert (await (await client.get(f"{API}/collections/v")).json())["count"] == 1


@pytest.mark.parametrize("body", [b"", b'{"vector": [1, 0', b"not json"])
async def test_an_empty_or_malformed_body_names_the_body(client: Any, body: bytes) -> None:
    await collection(client)
    resp = await client.post(f"{API}/collections/v/search", data=body, headers={"Content-Type": "application/json"})
    reply = await resp.json()
    assert resp.status == 400, reply
    assert reply["error"]["field"] == "body", reply


async def test_a_bad_batch_item_names_its_field_and_suggests_the_one_meant(client: Any) -> None:
    await collection(client)
    resp = await client.post(f"{API}/collections/v/vectors/batch", json={"vectors": [
        {"id": "b", "vector": [0, 1]}, {"id": "c", "values": [0, 1]}]})
    reply = await resp.json()
    assert resp.status == 200, reply
    assert reply["successful"] == 1
    assert reply["errors"] == [{"index": 1, "id": None, "error": {
        "code": "invalid_request", "message": "unknown field 'values'; did you mean 'vector'?"}}]
