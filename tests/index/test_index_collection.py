"""A collection against a brute-force model: upserts, deletes, drains, snapshots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from s5vec.index import (
    Collection, CollectionConfig, DimensionMismatch, RawItem, RecordNotFound, SealedSegment, prepare_batch,
    prepare_vectors,
)

DIM = 8


def restart(coll: Collection, directory: Path) -> Collection:
    """Round-trip a collection through its plain-data snapshot, as a checkpoint + reload does."""
    snap = coll.snapshot()
    segments = [SealedSegment.from_parts(seg.frozen_parts(), mutable, directory / f"r{seg.seq}-{id(snap)}.f32")
                for seg, mutable, _ in snap.segments]
    coll.close()
    return Collection.restore(snap.config, snap.recent, segments, directory)


def migrate(coll: Collection, directory: Path, now: float | None = None) -> int:
    plan = coll.plan_migration(now)
    if plan is None:
        return 0
    return coll.commit_migration(plan, coll.build_migration(plan, directory))


def upsert(coll: Collection, items: list[RawItem]) -> list[str]:
    batch, errors = prepare_batch(coll.config, items)
    assert not errors, errors
    coll.apply_upsert(batch)
    return batch.ids


def test_search_returns_exact_neighbours_from_buffer_and_graph_alike(tmp_path: Path, minilm: Any) -> None:
    coll = Collection(CollectionConfig("t", 384), tmp_path)
    base = minilm.base[:3000]
    upsert(coll, [RawItem(i, base[i]) for i in range(2000)])
    while coll.drain(512):
        pass
    upsert(coll, [RawItem(i, base[i]) for i in range(2000, 3000)])  # stays in the exact buffer
    assert coll.stats()["pending"] == 1000 and coll.stats()["indexed"] == 2000
    normed = base / np.linalg.norm(base, axis=1, keepdims=True)
    found = 0
    for query in minilm.queries[:100]:
        q = prepare_vectors(coll.config, query[None])[0]
        truth = set(np.argsort(-(normed @ q))[:10].tolist())
        found += len({int(h.id) for h in coll.search(q, 10)} & truth)
    assert found / 1000 >= 0.95


def test_cosine_scores_lie_in_unit_interval_and_l2_distance_is_euclidean(tmp_path: Path) -> None:
    cos = Collection(CollectionConfig("c", 2), tmp_path)
    upsert(cos, [RawItem("same", [1, 0]), RawItem("opposite", [-1, 0])])
    hits = cos.search(prepare_vectors(cos.config, np.array([[2.0, 0.0]], np.float32))[0], 2)
    assert [(h.id, round(h.score, 5)) for h in hits] == [("same", 1.0), ("opposite", 0.0)]
    l2 = Collection(CollectionConfig("l", 2, "l2"), tmp_path)
    upsert(l2, [RawItem("p", [3, 4])])
    assert l2.search(np.zeros(2, np.float32), 1)[0].distance == pytest.approx(5.0)


def test_prepare_batch_rejects_wrong_dimension_per_item(tmp_path: Path) -> None:
    config = CollectionConfig("t", 3)
    batch, errors = prepare_batch(config, [RawItem("a", [1, 2, 3]), RawItem("b", [1, 2])])
    assert batch.ids == ["a"] and errors[0].code == "dimension_mismatch" and errors[0].index == 1
    with pytest.raises(DimensionMismatch):
        prepare_vectors(config, np.ones((1, 2), np.float32))


def test_search_survives_deleting_most_of_the_graph(tmp_path: Path) -> None:
    coll = Collection(CollectionConfig("t", DIM), tmp_path)
    rng = np.random.default_rng(0)
    upsert(coll, [RawItem(i, rng.normal(size=DIM)) for i in range(500)])
    while coll.drain(1000):
        pass
    coll.apply_delete([str(i) for i in range(495)])
    hits = coll.search(prepare_vectors(coll.config, rng.normal(size=(1, DIM)).astype(np.float32))[0], 10)
    assert sorted(h.id for h in hits) == [str(i) for i in range(495, 500)]


class CollectionMachine(RuleBasedStateMachine):
    """Random upserts, deletes, drains, metadata filters and snapshot/restore vs a dict model."""

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}

    @initialize(tmp=st.just(None))
    def setup(self, tmp: None) -> None:
        import tempfile
        self.dir = Path(tempfile.mkdtemp(prefix="s5vec-sm-"))
        self.coll = Collection(CollectionConfig("sm", DIM, payload=(("tag", "keyword"),)), self.dir, capacity=16)
        self.rng = np.random.default_rng(42)

    @rule(ids=st.lists(st.integers(0, 60), min_size=1, max_size=25), tag=st.sampled_from(["a", "b", "c"]),
          age_days=st.sampled_from([0, 0, 10, 30]))
    def upsert(self, ids: list[int], tag: str, age_days: int) -> None:
        vectors = self.rng.normal(size=(len(ids), DIM)).astype(np.float32)
        stamp = time.time() - age_days * 86_400
        items = [RawItem(i, vectors[n], {"tag": tag, "n": i}, stamp) for n, i in enumerate(ids)]
        batch, errors = prepare_batch(self.coll.config, items)
        assert not errors
        self.coll.apply_upsert(batch)
        for rid, vec, meta in zip(batch.ids, batch.vectors, batch.metadata):
            self.model[rid] = (vec, meta)

    @rule(ids=st.lists(st.integers(0, 60), min_size=1, max_size=10))
    def delete(self, ids: list[int]) -> None:
        keys = [str(i) for i in ids]
        removed = self.coll.apply_delete(keys)
        assert removed == len({k for k in keys if k in self.model})
        for key in keys:
            self.model.pop(key, None)

    @rule(amount=st.integers(1, 40))
    def drain(self, amount: int) -> None:
        self.coll.drain(amount, 1)

    @rule()
    def restart(self) -> None:
        self.coll = restart(self.coll, self.dir)

    @rule()
    def migrate(self) -> None:
        before = len(self.coll)
        migrate(self.coll, self.dir)
        assert len(self.coll) == before

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def update_metadata(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.model)))
        meta = {"tag": data.draw(st.sampled_from(["a", "b", "c"])), "n": int(rid), "edited": True}
        self.coll.apply_metadata(rid, meta)
        self.model[rid] = (self.model[rid][0], meta)

    @precondition(lambda self: bool(self.model))
    @rule(tag=st.sampled_from([None, "a", "b"]), k=st.integers(1, 15))
    def search(self, tag: str | None, k: int) -> None:
        query = prepare_vectors(self.coll.config, self.rng.normal(size=(1, DIM)).astype(np.float32))[0]
        hits = self.coll.search(query, k, ef=200, filter={"tag": tag} if tag else None)
        allowed = {rid: v for rid, (v, m) in self.model.items() if tag is None or m["tag"] == tag}
        ids = [h.id for h in hits]
        assert len(ids) == len(set(ids)) == min(k, len(allowed))
        assert set(ids) <= set(allowed)
        scores = {rid: float(v @ query) for rid, v in allowed.items()}
        truth = sorted(scores, key=lambda r: -scores[r])[:k]
        # at most 61 records, ef=200, tiny segments searched exactly: results must be exact
        assert ids == truth
        assert [h.id for h in self.coll.search(query, k, ef=200, filter={"tag": tag} if tag else None,
                                               merge="average")] == truth
        for hit in hits:
            assert hit.metadata == self.model[hit.id][1]

    @invariant()
    def counts_and_records_match(self) -> None:
        if not hasattr(self, "coll"):
            return
        assert len(self.coll) == len(self.model)
        for rid, (vec, meta) in list(self.model.items())[:5]:
            hit = self.coll.get(rid)
            assert hit.metadata == meta and np.allclose(hit.vector, vec)
        with pytest.raises(RecordNotFound):
            self.coll.get("never-written")


CollectionMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])
test_collection_state_machine = CollectionMachine.TestCase


def test_writes_between_planning_and_commit_of_a_migration_win(tmp_path: Path) -> None:
    coll = Collection(CollectionConfig("m", DIM, payload=(("tag", "keyword"),)), tmp_path)
    rng = np.random.default_rng(9)
    old = time.time() - 30 * 86_400
    upsert(coll, [RawItem(i, rng.normal(size=DIM), {"tag": "a"}, old) for i in range(40)])
    plan = coll.plan_migration()
    assert plan is not None and plan.size == 40
    built = coll.build_migration(plan, tmp_path)
    upsert(coll, [RawItem(1, rng.normal(size=DIM), {"tag": "new"})])  # replaced: stays recent
    coll.apply_delete(["2"])
    coll.apply_metadata("3", {"tag": "edited"})
    assert coll.commit_migration(plan, built) == 38
    assert len(coll) == 39
    assert coll.get("1").metadata == {"tag": "new"} and coll.contains("1")
    assert not coll.contains("2")
    assert coll.get("3").metadata == {"tag": "edited"}
    assert coll.recent.labels.keys() == {"1"}
    query = coll.get("3").vector
    assert [h.id for h in coll.search(query, 1, filter={"tag": "edited"})] == ["3"]


def test_compaction_after_migration_shrinks_the_recent_tier_and_keeps_every_record(tmp_path: Path) -> None:
    coll = Collection(CollectionConfig("c", DIM), tmp_path)
    rng = np.random.default_rng(4)
    now = time.time()
    vectors = rng.normal(size=(3500, DIM)).astype(np.float32)
    upsert(coll, [RawItem(i, vectors[i], {"i": i}, now - (0 if i < 500 else 20 * 86_400)) for i in range(3500)])
    while coll.drain(1000, 1, now=now - 30 * 86_400):  # everything into the graph first (daemon order)
        pass
    assert migrate(coll, tmp_path) == 3000
    assert coll.needs_compaction and coll.recent.capacity >= 3500
    coll.apply_metadata("7", {"i": 7, "edited": True})
    assert coll.compact()
    assert not coll.needs_compaction and coll.recent.capacity < 1024 + 3500 // 4
    assert coll.recent.hnsw_live == 500 and coll.recent.pending == 0  # graph rebuilt, not left pending
    assert len(coll) == 3500 and coll.get("7").metadata == {"i": 7, "edited": True}
    for i in (3, 7, 499, 500, 3499):
        query = prepare_vectors(coll.config, vectors[i][None, :])[0]
        assert coll.search(query, 1)[0].id == str(i)


def test_upserts_replace_copies_in_any_of_many_segments_and_compaction_can_skip_the_graph(tmp_path: Path) -> None:
    coll = Collection(CollectionConfig("r", DIM), tmp_path)
    rng = np.random.default_rng(5)
    old = time.time() - 30 * 86_400
    for start in range(0, 300, 100):  # three rounds: ingest, migrate, compact without the graph
        upsert(coll, [RawItem(i, rng.normal(size=DIM), {"i": i}, old) for i in range(start, start + 100)])
        upsert(coll, [RawItem(f"new{start}", rng.normal(size=DIM), {"i": -1})])
        assert migrate(coll, tmp_path) == 100
        assert coll.compact(min_ratio=0.5, graph=False)
    assert len(coll.segments) == 3 and coll.recent.hnsw_live == 0 and coll.recent.pending == 3
    fresh = rng.normal(size=(3, DIM)).astype(np.float32)
    existed = coll.apply_upsert(prepare_batch(coll.config, [
        RawItem(i, fresh[n], {"i": i, "v": 2}) for n, i in enumerate((5, 150, 299))])[0])
    assert existed == [True, True, True]
    assert len(coll) == 303 and [s.live for s in coll.segments] == [99, 99, 99]
    for n, i in enumerate((5, 150, 299)):
        assert coll.get(str(i)).metadata == {"i": i, "v": 2}
        query = prepare_vectors(coll.config, fresh[n][None, :])[0]
        assert coll.search(query, 1)[0].id == str(i)
