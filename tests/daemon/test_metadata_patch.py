"""PATCH merges into a record's metadata (JSON Merge Patch, RFC 7396), PUT replaces it.
The merge runs in the engine's single writer: concurrent patches all land, and the WAL
holds the merged result, so a restart (replay after ``kill -9``) gives the same state."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

from conftest import Daemon

from s5vec.engine import Database

API = "/api/v1"
GENRE = {"genre": "drama", "views": 10, "rating": {"imdb": 7, "mpaa": "PG"}, "tags": ["a", "b"]}


async def record(client: Any, metadata: dict[str, Any]) -> None:
    assert (await client.post(f"{API}/collections", json={"name": "v", "dimension": 2})).status == 201
    resp = await client.post(f"{API}/collections/v/vectors", json={"id": "r", "vector": [1, 0], "metadata": metadata})
    assert resp.status == 201


async def metadata_of(client: Any, rid: str = "r") -> dict[str, Any]:
    resp = await client.get(f"{API}/collections/v/vectors/{rid}")
    assert resp.status == 200
    body = await resp.json()
    assert [round(x, 5) for x in body["vector"]] == [1.0, 0.0]
    return dict(body["metadata"])


async def test_patch_merges_into_the_metadata_keeping_the_other_keys(client: Any) -> None:
    await record(client, GENRE)
    resp = await client.patch(f"{API}/collections/v/vectors/r", json={"metadata": {"views": 91}})
    assert resp.status == 200 and await resp.json() == {"id": "r", "status": "updated"}
    assert await metadata_of(client) == {**GENRE, "views": 91}


async def test_patch_null_deletes_a_key_objects_merge_and_arrays_replace(client: Any) -> None:
    await record(client, GENRE)
    patch = {"genre": None, "missing": None, "rating": {"mpaa": None, "rt": 90}, "tags": ["c"], "new": {"x": None}}
    assert (await client.patch(f"{API}/collections/v/vectors/r", json={"metadata": patch})).status == 200
    assert await metadata_of(client) == {"views": 10, "rating": {"imdb": 7, "rt": 90}, "tags": ["c"], "new": {}}
    resp = await client.post(f"{API}/collections/v/search", json={"vector": [1, 0], "filter": {"rating.rt": 90}})
    assert [r["id"] for r in (await resp.json())["results"]] == ["r"]


async def test_put_replaces_the_whole_metadata(client: Any) -> None:
    await record(client, GENRE)
    assert (await client.put(f"{API}/collections/v/vectors/r", json={"metadata": {"views": 91}})).status == 200
    assert await metadata_of(client) == {"views": 91}


async def test_patch_of_a_missing_record_is_404_and_an_oversized_result_is_400(client: Any) -> None:
    await record(client, {"blob": "x" * 40_000})
    resp = await client.patch(f"{API}/collections/v/vectors/nope", json={"metadata": {"a": 1}})
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "record_not_found"
    resp = await client.patch(f"{API}/collections/v/vectors/r", json={"metadata": {"more": "y" * 40_000}})
    reply = await resp.json()
    assert resp.status == 400 and reply["error"]["field"] == "metadata", reply
    assert await metadata_of(client) == {"blob": "x" * 40_000}


async def test_concurrent_patches_of_one_record_all_land(client: Any) -> None:
    await record(client, {"genre": "drama"})
    replies = await asyncio.gather(*(client.patch(f"{API}/collections/v/vectors/r", json={"metadata": {f"k{n}": n}})
                                     for n in range(40)))
    assert [r.status for r in replies] == [200] * 40
    assert await metadata_of(client) == {"genre": "drama", **{f"k{n}": n for n in range(40)}}


async def test_patches_queued_with_an_upsert_and_a_delete_see_them_in_order(tmp_path: Path) -> None:
    """One writer group: upsert, patch, patch, delete, patch of the same record."""
    from s5vec.index import CollectionConfig, RawItem, RecordNotFound

    db = await Database.open(tmp_path / "data")
    try:
        await db.create_collection(CollectionConfig("v", 2))
        await db.upsert("v", [RawItem("r", [1, 0], {"old": 1})])
        got = await asyncio.gather(db.update_metadata("v", "r", {"a": 1, "old": 2}, merge=True),
                                   db.update_metadata("v", "r", {"b": 2, "old": None}, merge=True),
                                   return_exceptions=True)
        assert got == [None, None]
        assert db.collection("v").get("r").metadata == {"a": 1, "b": 2}
        # both are queued before the writer wakes: one group, the patch after the upsert
        got = await asyncio.gather(db.upsert("v", [RawItem("r", [0, 1], {"fresh": True})]),
                                   db.update_metadata("v", "r", {"c": 3}, merge=True), return_exceptions=True)
        assert got == [(["r"], []), None]
        assert db.collection("v").get("r").metadata == {"fresh": True, "c": 3}
        got = await asyncio.gather(db.delete("v", ["r"]), db.update_metadata("v", "r", {"d": 4}, merge=True),
                                   return_exceptions=True)
        assert got[0] == 1 and isinstance(got[1], RecordNotFound)
        assert not db.collection("v").contains("r")
    finally:
        await db.close()


def call(daemon: Daemon, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(daemon.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def test_merged_metadata_survives_a_kill_and_replay_of_the_wal(daemon: Daemon) -> None:
    daemon.start()
    assert call(daemon, "POST", f"{API}/collections", {"name": "v", "dimension": 2})[0] == 201
    assert call(daemon, "POST", f"{API}/collections/v/vectors",
                {"id": "r", "vector": [1, 0], "metadata": GENRE})[0] == 201
    for patch in ({"views": 91}, {"genre": None, "rating": {"rt": 90}}, {"tags": None, "views": 92}):
        assert call(daemon, "PATCH", f"{API}/collections/v/vectors/r", {"metadata": patch})[0] == 200
    want = {"views": 92, "rating": {"imdb": 7, "mpaa": "PG", "rt": 90}}
    assert call(daemon, "GET", f"{API}/collections/v/vectors/r")[1]["metadata"] == want
    daemon.kill()
    daemon.start()
    assert call(daemon, "GET", f"{API}/collections/v/vectors/r")[1]["metadata"] == want
    daemon.stop()
