"""The two tiers through the REST API: migration, routing, filters, scoring, metadata edits."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from conftest import DATA, exact_top_k

API = "/api/v1"
DAY = 86_400


async def fill(client: Any, name: str, base: np.ndarray, now: float) -> list[dict[str, Any]]:
    """Records with video-like metadata; half of them are 30+ days old (historical)."""
    rng = np.random.default_rng(5)
    genres = ["drama", "comedy", "sci-fi", "horror", "documentary"]
    records = []
    for i, vector in enumerate(base):
        age = (30 + rng.integers(0, 300)) * DAY if i % 2 else rng.integers(0, 3 * DAY)
        records.append({"id": str(i), "vector": vector.tolist(), "timestamp": now - float(age), "metadata": {
            "genre": [genres[i % 5], genres[(i // 5) % 5]], "views": int(rng.integers(0, 100_000)),
            "type": "video" if i % 3 else "audio"}})
    for start in range(0, len(records), 100):
        resp = await client.post(f"{API}/collections/{name}/vectors/batch", json={"vectors": records[start:start + 100]})
        assert (await resp.json())["failed"] == 0
    return records


async def search(client: Any, name: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(f"{API}/collections/{name}/search", json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_migration_moves_old_records_and_search_spans_both_tiers(client: Any, minilm: Any) -> None:
    base = minilm.base[:3000]
    await client.post(f"{API}/collections", json={"name": "v", "dimension": 384, "segment_records": 500,
                                                  "payload_indexes": {"genre": "keyword", "views": "number"}})
    records = await fill(client, "v", base, time.time())
    moved = await (await client.post(f"{API}/admin/migrate")).json()
    assert moved["moved"] == 1500 and moved["segments"] >= 3
    info = await (await client.get(f"{API}/collections/v")).json()
    assert info["historical"] == 1500 and info["recent"] == 1500 and info["count"] == 3000

    found = 0
    for query in minilm.queries[:40]:
        body = await search(client, "v", {"vector": query.tolist(), "k": 10, "options": {"include_metadata": False}})
        ids = [r["id"] for r in body["results"]]
        assert len(ids) == len(set(ids)) == 10
        found += len({int(i) for i in ids} & set(exact_top_k(base, query, 10)))
    assert found / 400 >= 0.95

    query = minilm.queries[0].tolist()
    recent_only = await search(client, "v", {"vector": query, "options": {"search_historical": False}})
    assert all(int(r["id"]) % 2 == 0 for r in recent_only["results"])
    old_only = await search(client, "v", {"vector": query, "options": {"search_recent": False, "ivf_nprobe": 64}})
    assert all(int(r["id"]) % 2 == 1 for r in old_only["results"])

    # an id that lives in the historical tier is replaced by an upsert and deleted by a delete
    old_id = old_only["results"][0]["id"]
    await client.post(f"{API}/collections/v/vectors", json={"id": old_id, "vector": base[0].tolist(),
                                                             "metadata": {"genre": ["new"]}})
    again = await search(client, "v", {"vector": query, "k": 50})
    assert [r["id"] for r in again["results"]].count(old_id) <= 1
    record = await (await client.get(f"{API}/collections/v/vectors/{old_id}")).json()
    assert record["metadata"] == {"genre": ["new"]}
    victim = old_only["results"][1]["id"]
    assert (await client.delete(f"{API}/collections/v/vectors/{victim}")).status == 200
    assert (await client.get(f"{API}/collections/v/vectors/{victim}")).status == 404
    assert (await (await client.get(f"{API}/collections/v")).json())["count"] == 2999
    assert records  # keep the fixture data alive for debugging


async def test_filters_are_exact_in_both_tiers_and_metadata_edits_apply(client: Any, minilm: Any) -> None:
    base = minilm.base[:1000]
    await client.post(f"{API}/collections", json={"name": "f", "dimension": 384,
                                                  "payload_indexes": {"genre": "keyword", "views": "number"}})
    records = await fill(client, "f", base, time.time())
    await client.post(f"{API}/admin/migrate")
    spec = {"genre": "sci-fi", "views": {"$gte": 50_000}}
    matching = [int(r["id"]) for r in records
                if "sci-fi" in r["metadata"]["genre"] and r["metadata"]["views"] >= 50_000]
    query = minilm.queries[3]
    body = await search(client, "f", {"vector": query.tolist(), "k": 10, "filter": spec})
    normed = base[matching] / np.linalg.norm(base[matching], axis=1, keepdims=True)
    truth = [matching[i] for i in np.argsort(-(normed @ (query / np.linalg.norm(query))))[:10]]
    assert [int(r["id"]) for r in body["results"]] == truth

    target = str(truth[0])
    resp = await client.put(f"{API}/collections/f/vectors/{target}", json={"metadata": {"genre": ["archived"]}})
    assert resp.status == 200
    body = await search(client, "f", {"vector": query.tolist(), "k": 10, "filter": spec})
    assert target not in [r["id"] for r in body["results"]]
    record = await (await client.get(f"{API}/collections/f/vectors/{target}")).json()
    assert record["metadata"] == {"genre": ["archived"]} and len(record["vector"]) == 384
    assert (await client.patch(f"{API}/collections/f/vectors/nope", json={"metadata": {}})).status == 404

    deleted = await (await client.post(f"{API}/collections/f/vectors/delete", json={"filter": {"type": "audio"}})).json()
    assert deleted["deleted"] == sum(1 for r in records if r["metadata"]["type"] == "audio" and r["id"] != target)
    body = await search(client, "f", {"vector": query.tolist(), "k": 100, "filter": {"type": "audio"}})
    assert body["results"] == []
    for bad in ({}, {"ids": ["1"], "filter": {"type": "video"}}, {"filter": {}}):
        assert (await client.post(f"{API}/collections/f/vectors/delete", json=bad)).status == 400


async def test_scoring_reranks_by_recency_and_popularity(client: Any) -> None:
    now = time.time()
    await client.post(f"{API}/collections", json={"name": "s", "dimension": 2})
    await client.post(f"{API}/collections/s/vectors/batch", json={"vectors": [
        {"id": "old-close", "vector": [1, 0], "timestamp": now - 60 * DAY, "metadata": {"views": 10}},
        {"id": "new-near", "vector": [0.95, 0.31], "timestamp": now - 3600, "metadata": {"views": 10}},
        {"id": "popular", "vector": [0.9, 0.43], "timestamp": now - 3600, "metadata": {"views": 900_000}},
    ]})
    plain = await search(client, "s", {"vector": [1, 0], "k": 3})
    assert [r["id"] for r in plain["results"]] == ["old-close", "new-near", "popular"]
    decayed = await search(client, "s", {"vector": [1, 0], "k": 3, "options": {
        "scoring": {"decay": {"function": "exp", "half_life_s": 7 * DAY}}}})
    assert decayed["results"][-1]["id"] == "old-close"
    boosted = await search(client, "s", {"vector": [1, 0], "k": 3, "options": {
        "scoring": {"decay": {"half_life_s": 7 * DAY}, "popularity": {"field": "views", "weight": 0.5}}}})
    assert boosted["results"][0]["id"] == "popular"
    resp = await client.post(f"{API}/collections/s/search", json={"vector": [1, 0], "options": {
        "scoring": {"decay": {"half_life_s": -1}}}})
    assert resp.status == 400 and "half_life_s" in (await resp.text())


async def test_merge_strategies_and_timeouts_are_accepted_and_validated(client: Any) -> None:
    await client.post(f"{API}/collections", json={"name": "m", "dimension": 2})
    await client.post(f"{API}/collections/m/vectors", json={"id": "a", "vector": [1, 0]})
    for options in ({"merge_strategy": "average"}, {"merge_strategy": "weighted", "tier_weights": [1.0, 0.5]},
                    {"timeout_ms": 1000}):
        body = await search(client, "m", {"vector": [1, 0], "options": options})
        assert [r["id"] for r in body["results"]] == ["a"] and body["partial"] is False
    for options in ({"merge_strategy": "vote"}, {"tier_weights": [1, 2]}, {"timeout_ms": 0}, {"ivf_nprobe": 0}):
        resp = await client.post(f"{API}/collections/m/search", json={"vector": [1, 0], "options": options})
        assert resp.status == 400, options


async def test_migrated_collection_survives_checkpoint_and_restart(make_client: Any, tmp_path: Any,
                                                                  minilm: Any) -> None:
    data_dir = tmp_path / "tiers"
    client = await make_client(data_dir=data_dir)
    base = minilm.base[:1200]
    await client.post(f"{API}/collections", json={"name": "p", "dimension": 384})
    await fill(client, "p", base, time.time())
    await client.post(f"{API}/admin/migrate")
    await client.post(f"{API}/admin/checkpoint")
    victim = "7"  # odd ids are historical
    await client.delete(f"{API}/collections/p/vectors/{victim}")
    await client.close()
    client = await make_client(data_dir=data_dir)
    info = await (await client.get(f"{API}/collections/p")).json()
    assert info["count"] == 1199 and info["historical"] == 599
    assert info["segments_loaded"] == 0  # historical segments load lazily, on first use
    assert (await client.get(f"{API}/collections/p/vectors/{victim}")).status == 404
    record = await (await client.get(f"{API}/collections/p/vectors/9")).json()
    assert np.allclose(record["vector"], base[9] / np.linalg.norm(base[9]), atol=1e-6)
    body = await search(client, "p", {"vector": base[9].tolist(), "k": 1})
    assert body["results"][0]["id"] == "9"
    info = await (await client.get(f"{API}/collections/p")).json()
    assert info["segments_loaded"] == info["segments"] >= 1


async def test_tuning_picks_ef_and_nprobe_that_meet_the_target_recall(client: Any, minilm: Any) -> None:
    await client.post(f"{API}/collections", json={"name": "t", "dimension": 384})
    await fill(client, "t", minilm.base[:2400], time.time())
    await client.post(f"{API}/admin/migrate")
    result = await (await client.post(f"{API}/collections/t/tune", json={"target_recall": 0.97, "sample": 100})).json()
    assert result["ef"] in result["ef_recall"] or str(result["ef"]) in result["ef_recall"]
    assert max(result["ef_recall"].values()) >= 0.97 and max(result["nprobe_recall"].values()) >= 0.97
    chosen = result["nprobe_recall"][str(result["nprobe"])]
    assert chosen >= 0.97 and all(v < 0.97 for k, v in result["nprobe_recall"].items() if int(k) < result["nprobe"])
    info = await (await client.get(f"{API}/collections/t")).json()
    calibrated = info["calibrated"]
    assert (calibrated["ef"], calibrated["nprobe"], calibrated["recall"]) == (result["ef"], result["nprobe"], chosen)
    assert calibrated["source"] == "calibrated" and calibrated["target"] == 0.97
    resp = await client.post(f"{API}/collections/t/tune", json={"target_recall": 1.5})
    assert resp.status == 400


async def test_a_shared_codebook_is_calibrated_on_migration_and_requests_may_override_it(
        client: Any, minilm: Any) -> None:
    # 12,000 historical: enough for one codebook shared by the segments
    base = np.load(DATA / "base.f16.npy", mmap_mode="r")[:24_000].astype(np.float32)
    await client.post(f"{API}/collections", json={"name": "s", "dimension": 384, "segment_records": 5000,
                                                  "target_recall": 0.96})
    await fill(client, "s", base, time.time())
    await client.post(f"{API}/admin/migrate")
    info = await (await client.get(f"{API}/collections/s")).json()
    assert info["historical"] == 12_000 and info["segments"] >= 3
    assert info["codebook"]["segments"] == info["segments"] and info["target_recall"] == 0.96
    calibrated = info["calibrated"]
    assert calibrated["source"] == "calibrated" and calibrated["target"] == 0.96 and calibrated["recall"] >= 0.96
    found = 0
    historical = base[1::2]
    for query in minilm.queries[:40]:
        body = await search(client, "s", {"vector": query.tolist(), "k": 10,
                                          "options": {"include_metadata": False, "search_recent": False}})
        found += len({(int(r["id"]) - 1) // 2 for r in body["results"]} & set(exact_top_k(historical, query, 10)))
    assert found / 400 >= 0.94
    # a request's own nprobe and re-rank depth win: one list and ten candidates lose recall
    narrow = 0
    for query in minilm.queries[:40]:
        body = await search(client, "s", {"vector": query.tolist(), "k": 10, "options": {
            "include_metadata": False, "search_recent": False, "ivf_nprobe": 1, "ivf_rerank": 10}})
        narrow += len({(int(r["id"]) - 1) // 2 for r in body["results"]} & set(exact_top_k(historical, query, 10)))
    assert narrow < found
    resp = await client.post(f"{API}/collections/s/search", json={"vector": base[0].tolist(), "options": {"rerank": 0}})
    assert resp.status == 400 and "ivf_rerank" in await resp.text()
