"""The search contract: a keyword-only SearchSpec in, a SearchResult out; the older
argument form (kept for the engine) answers the same."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from s5vec.index import Collection, CollectionConfig, RawItem, SearchResult, SearchSpec, prepare_batch, prepare_vectors

DIM = 8


def two_tiers(tmp_path: Path) -> Collection:
    """Old records in a sealed segment, newer ones in the graph, the newest pending."""
    config = CollectionConfig("s", DIM, payload=(("tag", "keyword"),))
    coll = Collection(config, tmp_path)
    rng = np.random.default_rng(4)
    old = time.time() - 30 * 86_400
    items = [RawItem(f"h{i}", rng.normal(size=DIM), {"tag": "a" if i % 2 else "b"}, old) for i in range(200)]
    items += [RawItem(f"r{i}", rng.normal(size=DIM), {"tag": "a" if i % 3 else "b"}) for i in range(200)]
    batch, errors = prepare_batch(config, items)
    assert not errors
    coll.apply_upsert(batch)
    plan = coll.plan_migration()
    assert plan is not None
    coll.commit_migration(plan, coll.build_migration(plan, tmp_path / "segments"))
    while coll.drain(64):
        pass
    batch, _ = prepare_batch(config, [RawItem(f"p{i}", rng.normal(size=DIM), {"tag": "a"}) for i in range(20)])
    coll.apply_upsert(batch)
    assert coll.stats()["historical"] == 200 and coll.pending == 20
    return coll


def _rows(hits: list[Any]) -> list[tuple[Any, ...]]:
    out = []
    for hit in hits:
        row = msgspec.structs.asdict(hit)
        vector = row.pop("vector")
        out.append((*row.values(), None if vector is None else vector.tolist()))
    return out


def test_a_search_spec_is_keyword_only_and_frozen() -> None:
    spec = SearchSpec(k=5, filter={"tag": "a"})
    assert (spec.k, spec.ef, spec.merge, spec.recent, spec.historical) == (5, None, "take_best", True, True)
    with pytest.raises(TypeError):
        SearchSpec(5)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.k = 6  # type: ignore[misc]


OPTIONS: list[dict[str, Any]] = [
    {}, {"ef": 32}, {"filter": {"tag": "a"}}, {"score_threshold": 0.6}, {"include_metadata": False},
    {"include_vector": True}, {"recent": False}, {"historical": False}, {"nprobe": 1},
    {"merge": "average"}, {"merge": "weighted", "weights": [1.0, 0.5]},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_the_spec_form_answers_as_the_argument_form_over_both_tiers(tmp_path: Path, options: dict[str, Any]) -> None:
    coll = two_tiers(tmp_path)
    queries = prepare_vectors(coll.config, np.random.default_rng(5).normal(size=(3, DIM)).astype(np.float32))
    spec = SearchSpec(k=7, **options)
    report: dict[str, Any] = {}
    single = coll.search(queries[0], spec)
    assert isinstance(single, SearchResult) and single.partial is False
    assert _rows(single.hits) == _rows(coll.search(queries[0], 7, report=report, **options))
    assert set(single.seconds) == set(report["seconds"]) and report["partial"] is False
    batch = coll.search_batch(queries, spec)
    assert [_rows(hits) for hits in batch.hits] == [_rows(hits) for hits in coll.search_batch(queries, 7, **options)]
    assert _rows(batch.hits[0]) == _rows(single.hits)
    assert set(batch.seconds) == ({"recent"} if options.get("historical", True) is False else
                                  {"historical"} if options.get("recent", True) is False else {"recent", "historical"})


def test_a_past_deadline_gives_a_partial_result_from_the_recent_tier(tmp_path: Path) -> None:
    coll = two_tiers(tmp_path)
    query = prepare_vectors(coll.config, np.ones((1, DIM), np.float32))[0]
    result = coll.search(query, SearchSpec(k=50, deadline=time.monotonic() - 1.0))
    assert result.partial is True and "recent" in result.seconds
    assert len(result.hits) == 50 and all(not h.id.startswith("h") for h in result.hits)
    report: dict[str, Any] = {}
    old_form = coll.search(query, 50, deadline=time.monotonic() - 1.0, report=report)
    assert report["partial"] is True and _rows(old_form) == _rows(result.hits)
    whole = coll.search(query, SearchSpec(k=50))
    assert whole.partial is False and any(h.id.startswith("h") for h in whole.hits)


def test_a_graph_only_search_reports_the_recent_tier_time(tmp_path: Path) -> None:
    config = CollectionConfig("g", DIM)
    coll = Collection(config, tmp_path)
    batch, _ = prepare_batch(config, [RawItem(i, np.random.default_rng(i).normal(size=DIM)) for i in range(100)])
    coll.apply_upsert(batch)
    while coll.drain(64):
        pass
    result = coll.search(prepare_vectors(config, np.ones((1, DIM), np.float32))[0], SearchSpec(k=3))
    assert len(result.hits) == 3 and result.partial is False and set(result.seconds) == {"recent"}
    assert result.seconds["recent"] >= 0.0


def test_the_argument_form_rejects_an_unknown_option(tmp_path: Path) -> None:
    coll = Collection(CollectionConfig("u", DIM), tmp_path)
    with pytest.raises(TypeError):
        coll.search(np.ones(DIM, np.float32), 3, nprobes=4)
