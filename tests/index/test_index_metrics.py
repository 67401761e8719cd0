"""Distance → score: one definition per metric, the same in both tiers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from s5vec.index import Collection, CollectionConfig, RawItem, prepare_batch, prepare_vectors
from s5vec.index.metrics import distance_of, hit_values, raw_distances, score_of

DIM = 8


def test_each_metric_maps_raw_distances_to_the_documented_distance_and_score() -> None:
    raw = np.array([0.0, 0.5, 1.0, 2.0, -1e-7, 2.5], np.float32)
    assert score_of("cosine", raw).tolist() == [1.0, 0.75, 0.5, 0.0, 1.0, 0.0]  # (1 + cos) / 2, clamped
    assert distance_of("cosine", raw).tolist() == raw.astype(np.float64).tolist()
    assert score_of("ip", raw).tolist() == (1.0 - raw.astype(np.float64)).tolist()  # the inner product
    assert distance_of("ip", raw).tolist() == raw.astype(np.float64).tolist()
    squared = np.array([0.0, 4.0, 9.0, -1e-7], np.float32)
    assert distance_of("l2", squared).tolist() == [0.0, 2.0, 3.0, 0.0]  # Euclidean; rounding noise is 0
    assert score_of("l2", squared).tolist() == [1.0, 1 / 3, 0.25, 1.0]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_the_list_form_for_the_hot_path_equals_the_vectorised_form_exactly(metric: str) -> None:
    rng = np.random.default_rng(7)
    raw = np.concatenate([rng.uniform(-0.1, 2.1, 500), [0.0, 1.0, 2.0, -0.0, np.inf]]).astype(np.float32)
    distances, scores = hit_values(metric, raw.tolist())
    assert distances == distance_of(metric, raw).tolist()
    assert scores == score_of(metric, raw).tolist()


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_raw_distances_follow_the_index_convention(metric: str) -> None:
    rows = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
    query = np.array([0.6, 0.8], np.float32)
    expected = [0.8, 0.0] if metric == "l2" else [0.4, 0.0]  # squared L2, else 1 - <q, x>
    assert raw_distances(metric, rows, query).tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("merge", ["take_best", "average"])
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_both_tiers_give_the_same_distance_and_score_for_the_same_vector(tmp_path: Path, metric: str,
                                                                         merge: str) -> None:
    coll = Collection(CollectionConfig("m", DIM, metric), tmp_path)
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(40, DIM)).astype(np.float32) * 0.3
    old = time.time() - 30 * 86400
    items = [RawItem(f"old{i}", rows[i], timestamp=old) for i in range(len(rows))]
    items += [RawItem(f"new{i}", rows[i]) for i in range(len(rows))]
    batch, errors = prepare_batch(coll.config, items)
    assert not errors
    coll.apply_upsert(batch)
    plan = coll.plan_migration()
    assert plan is not None and plan.size == len(rows)
    coll.commit_migration(plan, coll.build_migration(plan, tmp_path / "segments"))
    while coll.drain(64):
        pass
    assert coll.stats()["historical"] == len(rows) and coll.stats()["indexed"] == len(rows)
    query = prepare_vectors(coll.config, rng.normal(size=(1, DIM)).astype(np.float32) * 0.3)[0]
    hits = coll.search(query, 2 * len(rows), 200, merge=merge, nprobe=1000)
    by_id = {h.id: h for h in hits}
    assert len(by_id) == 2 * len(rows)
    stored = prepare_vectors(coll.config, rows)
    expected = raw_distances(metric, stored, query)
    for i in range(len(rows)):
        historical, recent = by_id[f"old{i}"], by_id[f"new{i}"]
        assert historical.score == pytest.approx(recent.score, rel=1e-5, abs=1e-6)
        assert historical.distance == pytest.approx(recent.distance, rel=1e-5, abs=1e-6)
        assert recent.score == pytest.approx(float(score_of(metric, expected[i:i + 1])[0]), rel=1e-5, abs=1e-6)
