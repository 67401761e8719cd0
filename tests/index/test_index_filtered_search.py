"""Filtered graph search of the recent tier, and the short path of an unfiltered search."""

from __future__ import annotations

import msgspec.structs
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import s5vec.index.collection as collection_module
from s5vec.index.collection import filtered_nprobe
from s5vec.index import (
    Collection,
    CollectionConfig,
    RawItem,
    prepare_batch,
    prepare_vectors,
)


DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "minilm-100k"


def build(tmp_path: Path, config: CollectionConfig, items: list[RawItem], drain: bool = True) -> Collection:
    coll = Collection(config, tmp_path)
    batch, errors = prepare_batch(config, items)
    assert not errors, errors
    coll.apply_upsert(batch)
    while drain and coll.drain(len(items)):
        pass
    return coll


@pytest.fixture
def graph_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every filter takes the filtered graph path, however few records match."""
    monkeypatch.setattr(collection_module, "EXACT_FILTER_LIMIT", 0)


def test_filtered_search_at_half_selectivity_matches_exact_top_k_on_minilm(
        tmp_path: Path, minilm: Any, graph_only: None) -> None:
    # The old over-fetch (k / selectivity * 1.5 + k candidates) reached 0.984 here at ef 64.
    config = CollectionConfig("f", 384, payload=(("half", "keyword"),))
    tag = np.random.default_rng(3).random(len(minilm.base)) < 0.5
    coll = build(tmp_path, config, [RawItem(i, v, {"half": "yes" if tag[i] else "no"})
                                    for i, v in enumerate(minilm.base)])
    normed = minilm.base / np.linalg.norm(minilm.base, axis=1, keepdims=True)
    rows = np.flatnonzero(tag)
    found = 0
    for query in minilm.queries[:200]:
        q = prepare_vectors(config, query[None])[0]
        truth = set(rows[np.argsort(-(normed[rows] @ q), kind="stable")[:10]].tolist())
        hits = coll.search(q, 10, ef=64, filter={"half": "yes"}, include_metadata=False)
        assert len(hits) == 10
        found += len({int(h.id) for h in hits} & truth)
    assert found / 2000 >= 0.99


def test_filtered_graph_search_returns_k_matching_records_when_the_matches_lie_far_away(
        tmp_path: Path, graph_only: None) -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(3000, 8)).astype(np.float32)
    direction = np.ones(8, np.float32) / np.sqrt(8)
    far = vectors @ direction < -1.5  # about 7 %, all on the side away from the query
    config = CollectionConfig("f", 8, payload=(("side", "keyword"),))
    coll = build(tmp_path, config, [RawItem(i, v, {"side": "far" if far[i] else "near"})
                                    for i, v in enumerate(vectors)])
    matching = np.flatnonzero(far)
    coll.apply_delete([str(i) for i in matching[: len(matching) - 12].tolist()])  # 12 matches stay
    survivors = {str(i) for i in matching[-12:].tolist()}
    hits = coll.search(direction, 10, ef=16, filter={"side": "far"})
    assert len(hits) == 10 and {h.id for h in hits} <= survivors
    assert all(h.metadata == {"side": "far"} for h in hits)
    assert {h.id for h in coll.search(direction, 50, ef=16, filter={"side": "far"})} == survivors


def test_filtered_graph_search_returns_exact_results_when_it_walks_the_whole_graph(
        tmp_path: Path, graph_only: None) -> None:
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    config = CollectionConfig("f", 8, "l2", payload=(("n", "number"),))
    coll = build(tmp_path, config, [RawItem(i, v, {"n": i}) for i, v in enumerate(vectors)])
    query = rng.normal(size=8).astype(np.float32)
    dist = ((vectors - query) ** 2).sum(axis=1)
    odd = np.arange(1, 400, 2)
    truth = [str(i) for i in odd[np.argsort(dist[odd], kind="stable")[:10]].tolist()]
    hits = coll.search(query, 10, ef=400, filter={"$or": [{"n": {"$gte": 1000}}, *[{"n": int(i)} for i in odd]]})
    assert [h.id for h in hits] == truth


def test_graph_filtered_returns_none_when_the_graph_cannot_answer(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    coll = build(tmp_path, CollectionConfig("f", 8), [RawItem(i, rng.normal(size=8)) for i in range(200)])
    recent = coll.recent
    recent.hnsw_live = 10_000  # more than the graph holds: hnswlib cannot return that many
    mask = np.ones(recent.capacity, bool)
    assert recent.graph_filtered(rng.normal(size=8).astype(np.float32), 10, mask, 200) is None


def _as_tuples(hits: list[Any]) -> list[tuple[Any, ...]]:
    out = []
    for hit in hits:
        row = msgspec.structs.asdict(hit)
        vector = row.pop("vector")
        out.append((*row.values(), None if vector is None else vector.tolist()))
    return out


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_graph_only_searches_equal_the_general_path_they_shortcut(
        tmp_path: Path, metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # search (one query) and search_batch (a coalesced batch) both take the graph-only
    # path here; the general path (per-tier candidates, merge, dedupe) is the reference.
    rng = np.random.default_rng(8)
    config = CollectionConfig("s", 8, metric)
    coll = build(tmp_path, config, [RawItem(i, rng.normal(size=8), {"i": i}, time.time() - i) for i in range(300)])
    coll.apply_delete([str(i) for i in range(0, 300, 3)])
    taken: list[int] = []
    shortcut = coll._search_graph

    def counted(*args: Any, **kwargs: Any) -> Any:
        found = shortcut(*args, **kwargs)
        taken.append(found is not None)
        return found

    for _ in range(20):
        qs = prepare_vectors(config, rng.normal(size=(3, 8)).astype(np.float32))
        for options in ({}, {"score_threshold": 0.5}, {"include_metadata": False, "include_vector": True},
                        {"ef": 16}, {"historical": False}):
            monkeypatch.setattr(coll, "_search_graph", lambda *a, **k: None)
            general = [_as_tuples(hits) for hits in coll.search_batch(qs, 7, **options)]  # type: ignore[arg-type]
            monkeypatch.setattr(coll, "_search_graph", counted)
            report: dict[str, Any] = {}
            single = coll.search(qs[0], 7, report=report, **options)  # type: ignore[arg-type]
            assert _as_tuples(single) == general[0]
            assert report["partial"] is False and set(report["seconds"]) == {"recent"}
            batch = coll.search_batch(qs, 7, **options)  # type: ignore[arg-type]
            assert [_as_tuples(hits) for hits in batch] == general
    assert taken and all(taken)


def test_single_query_search_sees_records_not_yet_in_the_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    config = CollectionConfig("s", 8)
    coll = build(tmp_path, config, [RawItem(i, rng.normal(size=8)) for i in range(100)])
    target = rng.normal(size=8).astype(np.float32)
    batch, _ = prepare_batch(config, [RawItem("new", target)])
    coll.apply_upsert(batch)  # pending: searched exactly, not through the graph
    assert coll.search(prepare_vectors(config, target[None])[0], 1)[0].id == "new"


def test_a_repeated_filter_sees_every_write_made_between_the_searches(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    config = CollectionConfig("c", 8, payload=(("tag", "keyword"),))
    coll = build(tmp_path, config, [RawItem(i, rng.normal(size=8), {"tag": "a"}) for i in range(50)])
    query = prepare_vectors(config, rng.normal(size=(1, 8)).astype(np.float32))[0]

    def tagged_b() -> set[str]:
        return {h.id for h in coll.search(query, 100, filter={"tag": "b"})}

    assert tagged_b() == set()
    coll.apply_metadata("3", {"tag": "b"})
    assert tagged_b() == {"3"}
    batch, _ = prepare_batch(config, [RawItem("new", rng.normal(size=8), {"tag": "b"})])
    coll.apply_upsert(batch)
    assert tagged_b() == {"3", "new"}
    coll.drain(100)
    assert tagged_b() == {"3", "new"}
    coll.apply_delete(["3"])
    assert tagged_b() == {"new"}


@pytest.mark.parametrize("selectivity", [0.5, 0.1])
def test_filtered_search_of_a_historical_segment_keeps_recall_on_minilm(
        tmp_path: Path, graph_only: None, selectivity: float) -> None:
    # A filter leaves fewer matching rows in each probed list, so the segment probes
    # more lists (filtered_nprobe); with the unfiltered nprobe the 10 % case fell below 0.95.
    base = np.load(DATA / "base.f16.npy", mmap_mode="r")[:40_000].astype(np.float32)
    queries = np.load(DATA / "queries.f16.npy", mmap_mode="r")[:200].astype(np.float32)
    config = CollectionConfig("h", 384, payload=(("tag", "keyword"),))
    tag = np.random.default_rng(5).random(len(base)) < selectivity
    old = time.time() - 30 * 86_400
    coll = build(tmp_path, config, [RawItem(str(i), v, {"tag": "yes" if tag[i] else "no"}, old)
                                    for i, v in enumerate(base)], drain=False)
    plan = coll.plan_migration()
    assert plan is not None
    assert coll.commit_migration(plan, coll.build_migration(plan, tmp_path)) == len(base)
    assert coll.stats()["segments"] == 1 and coll.stats()["recent"] == 0
    normed = base / np.linalg.norm(base, axis=1, keepdims=True)
    rows = np.flatnonzero(tag)
    found = 0
    for query in queries:
        q = prepare_vectors(config, query[None])[0]
        truth = set(rows[np.argsort(-(normed[rows] @ q), kind="stable")[:10]].tolist())
        hits = coll.search(q, 10, filter={"tag": "yes"}, include_metadata=False)
        assert len(hits) == 10 and all(tag[int(h.id)] for h in hits)
        found += len({int(h.id) for h in hits} & truth)
    assert found / (10 * len(queries)) >= 0.97


def test_filtered_nprobe_widens_with_selectivity_up_to_four_times() -> None:
    assert filtered_nprobe(16, 1.0) == 16
    assert filtered_nprobe(16, 0.5) == 32
    assert filtered_nprobe(16, 0.1) == 64
    assert filtered_nprobe(16, 0.001) == 64
