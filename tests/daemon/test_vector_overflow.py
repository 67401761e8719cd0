"""Vectors whose distances would overflow float32: refused with a 400 naming ``vector``
(a batch names each bad item by its index), never answered with ``"distance": null``."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from s5vec.index import records

API = "/api/v1"
HUGE = [3.4e38] * 3
LONGEST = records.MAX_NORM / math.sqrt(3) * 0.999


async def collection(client: Any, metric: str) -> None:
    resp = await client.post(f"{API}/collections", json={"name": "v", "dimension": 3, "metric": metric})
    assert resp.status == 201
    assert (await client.post(f"{API}/collections/v/vectors", json={"id": "a", "vector": [1, 2, 3]})).status == 201


def finite_numbers(text: str) -> None:
    """The body parses with every number finite and no null distance or score."""
    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                assert not (key in ("distance", "score") and child is None), text
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)
        elif isinstance(value, float):
            assert math.isfinite(value), text
    walk(json.loads(text))


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("vector", [HUGE, [1e19, 0, 0], [-3e38, 3e38, 1]])
async def test_a_vector_whose_distances_overflow_float32_is_a_400_naming_vector(client: Any, metric: str,
                                                                                vector: list[float]) -> None:
    await collection(client, metric)
    resp = await client.post(f"{API}/collections/v/vectors", json={"id": "big", "vector": vector})
    reply = await resp.json()
    assert resp.status == 400, reply
    assert reply["error"]["field"] == "vector" and "overflow" in reply["error"]["message"], reply
    resp = await client.post(f"{API}/collections/v/search", json={"vector": vector, "k": 2})
    reply = await resp.json()
    assert resp.status == 400, reply
    assert reply["error"]["field"] == "vector" and "overflow" in reply["error"]["message"], reply
    assert (await (await client.get(f"{API}/collections/v")).json())["count"] == 1


@pytest.mark.parametrize("metric", ["l2", "ip"])
async def test_a_batch_names_each_overflowing_item_by_its_index_and_keeps_the_rest(client: Any, metric: str) -> None:
    await collection(client, metric)
    resp = await client.post(f"{API}/collections/v/vectors/batch", json={"vectors": [
        {"id": "b", "vector": [0, 1, 0]}, {"id": "c", "vector": HUGE}, {"id": "d", "vector": [0, 0, 1]},
        {"id": "e", "vector": [-1e20, 0, 0]}]})
    reply = await resp.json()
    assert resp.status == 200, reply
    assert reply["successful"] == 2
    assert [(e["index"], e["id"]) for e in reply["errors"]] == [(1, "c"), (3, "e")]
    assert all("vector" in e["error"]["message"] and "overflow" in e["error"]["message"] for e in reply["errors"])


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
async def test_the_longest_vectors_allowed_search_with_finite_distances(client: Any, metric: str) -> None:
    await collection(client, metric)
    for rid, sign in (("plus", 1), ("minus", -1)):
        resp = await client.post(f"{API}/collections/v/vectors", json={"id": rid, "vector": [sign * LONGEST] * 3})
        assert resp.status == 201, await resp.text()
    for query in ([LONGEST] * 3, [-LONGEST] * 3, [1, 2, 3], HUGE if metric == "cosine" else [1, 0, 0]):
        resp = await client.post(f"{API}/collections/v/search", json={"vector": query, "k": 3})
        text = await resp.text()
        assert resp.status == 200, text
        assert json.loads(text)["count"] == 3
        finite_numbers(text)


async def test_a_stored_vector_that_overflows_is_an_explicit_error_not_a_null_distance(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    await collection(client, "l2")
    monkeypatch.setattr(records, "MAX_NORM", math.inf)  # as stored before lengths were bounded
    assert (await client.post(f"{API}/collections/v/vectors", json={"id": "old", "vector": HUGE})).status == 201
    monkeypatch.undo()
    resp = await client.post(f"{API}/collections/v/search", json={"vector": [1, 2, 3], "k": 2})
    text = await resp.text()
    assert resp.status == 500, text
    assert json.loads(text)["error"]["code"] == "non_finite_result"
    assert "null" not in text
