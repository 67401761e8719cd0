"""One codebook per collection: every segment filled from it, searched in one pass with one
merged exact re-rank, calibrated for the collection's target recall, retrained on growth."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import s5vec.index.collection as collection_module
from s5vec.index import Collection, CollectionConfig, RawItem, SealedSegment, prepare_batch, prepare_vectors
from s5vec.index.ivf import shared_nlist

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "minilm-100k"
DAY = 86_400.0
ROWS = 24_000


@pytest.fixture(scope="module")
def minilm() -> tuple[np.ndarray, np.ndarray]:
    base = np.load(DATA / "base.f16.npy", mmap_mode="r")[:ROWS].astype(np.float32)
    queries = np.load(DATA / "queries.f16.npy", mmap_mode="r")[:100].astype(np.float32)
    return base / np.linalg.norm(base, axis=1, keepdims=True), queries / np.linalg.norm(queries, axis=1, keepdims=True)


def sealed(tmp_path: Path, base: np.ndarray, windows: int = 3, config: CollectionConfig | None = None,
           start: int = 0) -> Collection:
    """A collection whose rows ``start..`` are spread over ``windows`` old days, migrated."""
    config = config or CollectionConfig("v", 384, payload=(("tag", "keyword"),), segment_records=ROWS // windows)
    coll = Collection(config, tmp_path)
    add(coll, base, start)
    migrate(coll, tmp_path)
    return coll


def add(coll: Collection, base: np.ndarray, start: int = 0) -> None:
    old = time.time() - 60 * DAY
    for first in range(0, len(base), 4000):
        rows = range(first, min(len(base), first + 4000))
        batch, errors = prepare_batch(coll.config, [
            RawItem(str(start + i), base[i], {"tag": "odd" if i % 2 else "even"}, old + (i % 3) * DAY) for i in rows])
        assert not errors
        coll.apply_upsert(batch)


def migrate(coll: Collection, directory: Path) -> None:
    plan = coll.plan_migration()
    assert plan is not None
    coll.commit_migration(plan, coll.build_migration(plan, directory))


def truth(base: np.ndarray, queries: np.ndarray, k: int = 10, keep: np.ndarray | None = None) -> list[set[int]]:
    scores = queries @ base.T
    if keep is not None:
        scores[:, ~keep] = -np.inf
    return [set(row.tolist()) for row in np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def recall(coll: Collection, queries: np.ndarray, want: list[set[int]], **options: object) -> float:
    found = 0
    for q, expected in zip(queries, want):
        hits = coll.search(q, 10, include_metadata=False, **options)  # type: ignore[arg-type]
        ids = [int(h.id) for h in hits]
        assert len(ids) == len(set(ids))  # no duplicates across segments
        found += len(set(ids) & expected)
    return found / (10 * len(queries))


def test_every_segment_is_filled_from_one_codebook_and_searched_in_one_pass(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = minilm
    coll = sealed(tmp_path, base)
    assert len(coll.segments) == 3 and coll.coarse is not None
    assert {s.codebook for s in coll.segments} == {coll.coarse.id}
    # sized for the geometric middle of the rows it serves before a retrain (x8)
    assert coll.coarse.nlist == shared_nlist(int(ROWS * 8 ** 0.5)) == 256
    stats = coll.stats()["codebook"]
    assert stats["segments"] == 3 and stats["sized_for"] == ROWS
    calls: list[int] = []
    real = collection_module.Collection._search_shared

    def spy(self: Collection, *args: object, **kwargs: object) -> object:
        calls.append(len(args[1]))  # type: ignore[arg-type]
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    coll.calibrate()  # as the engine does after a migration
    collection_module.Collection._search_shared = spy  # type: ignore[method-assign]
    try:
        assert recall(coll, queries, truth(base, queries)) >= 0.94
    finally:
        collection_module.Collection._search_shared = real  # type: ignore[method-assign]
    assert calls and set(calls) == {3}  # all three segments in each single pass


def test_calibration_meets_the_target_on_queries_it_never_saw(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    base, queries = minilm
    coll = sealed(tmp_path, base)
    result = coll.calibrate(0.95)
    assert result["met"] and result["recall"] >= 0.95
    assert coll.calibrated()["source"] == "calibrated"
    assert (coll.calibrated()["nprobe"], coll.calibrated()["rerank"]) == (result["nprobe"], result["rerank"])
    # the target holds on real queries, which calibration never saw
    assert recall(coll, queries, truth(base, queries)) >= 0.94
    # fewer lists at the chosen depth missed the target: the choice is the cheapest there
    chosen = f"{result['nprobe']}x{result['rerank']}"
    assert result["nprobe_recall"][chosen] == result["recall"]
    fewer = [v for key, v in result["nprobe_recall"].items()
             if key.endswith(f"x{result['rerank']}") and int(key.split("x")[0]) < result["nprobe"]]
    assert fewer and max(fewer) < 0.95
    assert not coll.calibration_due
    # a target out of reach (every list probed but only the codes' top 11 re-ranked)
    # keeps the most accurate setting tried and says so
    monkeypatch.setattr(collection_module, "_DEPTH_STEPS", (11,))
    missed = coll.calibrate(1.0, sample=50)
    assert missed["met"] is False and missed["recall"] == max(missed["nprobe_recall"].values())


def test_tombstones_and_filters_hold_in_the_shared_pass(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = minilm
    coll = sealed(tmp_path, base)
    gone = set(range(0, ROWS, 7))
    coll.apply_delete([str(i) for i in gone])
    keep = np.ones(ROWS, bool)
    keep[list(gone)] = False
    coll.calibrate()
    assert recall(coll, queries, truth(base, queries, keep=keep)) >= 0.94
    for q in queries[:20]:
        assert not {int(h.id) for h in coll.search(q, 10)} & gone
    odd = keep & (np.arange(ROWS) % 2 == 1)
    assert recall(coll, queries, truth(base, queries, keep=odd), filter={"tag": "odd"}) >= 0.95
    for q in queries[:20]:
        assert all(int(h.id) % 2 == 1 and int(h.id) not in gone for h in coll.search(q, 10, filter={"tag": "odd"}))


def test_snapshot_and_restore_keep_the_codebook_and_the_calibration(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = minilm
    coll = sealed(tmp_path, base)
    coll.calibrate()
    before = [[h.id for h in coll.search(q, 10)] for q in queries[:30]]
    snap = coll.snapshot()
    assert snap.codebook is not None and snap.codebook[0].id == coll.coarse.id  # type: ignore[union-attr]
    segments = [SealedSegment.from_parts(s.frozen_parts(), mutable, tmp_path / f"r{s.seq}.f32")
                for s, mutable, _ in snap.segments]
    restored = Collection.restore(snap.config, snap.recent, segments, tmp_path / "r", snap.codebook)
    assert restored.coarse is not None and restored.coarse.id == coll.coarse.id  # type: ignore[union-attr]
    assert {s.codebook for s in restored.segments} == {restored.coarse.id}
    assert restored.calibrated() == coll.calibrated()
    assert [[h.id for h in restored.search(q, 10)] for q in queries[:30]] == before


def test_small_first_migrations_keep_own_codebooks_until_rebalance_trains_a_shared_one(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    base, queries = minilm
    config = CollectionConfig("v", 384, payload=(("tag", "keyword"),), segment_records=ROWS)
    coll = Collection(config, tmp_path)
    for part in range(4):  # four migrations of 6,000 rows: each below SHARED_FROM alone
        monkeypatch.setattr(collection_module, "SHARED_FROM", 10 ** 9)
        add(coll, base[part * 6000:(part + 1) * 6000], part * 6000)
        migrate(coll, tmp_path)
    assert coll.coarse is None and len({s.codebook for s in coll.segments}) == 4
    monkeypatch.setattr(collection_module, "SHARED_FROM", 10_000)
    assert coll.codebook_due and coll.retrain_codebook()
    assert not coll.codebook_due and coll.codebook_rows == ROWS
    stale = coll.stale_segments()
    assert sorted(stale) == sorted(s.seq for s in coll.segments)
    # mixed: old segments are searched each on its own, and nothing is lost meanwhile
    assert recall(coll, queries, truth(base, queries)) >= 0.9
    plan = coll.plan_rebuild(stale)
    assert plan is not None
    assert coll.commit_rebuild(plan, coll.build_rebuild(plan, tmp_path))
    assert coll.stale_segments() == [] and {s.codebook for s in coll.segments} == {coll.coarse.id}
    coll.calibrate()
    assert recall(coll, queries, truth(base, queries)) >= 0.94
    # eight times the rows its lists were sized for asks for a new one
    coll.codebook_rows = ROWS // 9
    assert coll.codebook_due


def test_a_codebook_trained_for_one_metric_is_refused_by_another(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray]) -> None:
    base, _ = minilm
    coll = sealed(tmp_path, base[:12_000], windows=1,
                  config=CollectionConfig("v", 384, payload=(("tag", "keyword"),)))
    other = Collection(CollectionConfig("w", 384, metric="l2"), tmp_path / "w")
    add(other, base[:2000])
    plan = other.plan_migration()
    assert plan is not None
    with pytest.raises(ValueError, match="codebook: trained for metric 'cosine'"):
        other.build_migration(plan, tmp_path / "w", coll.coarse.codebook)  # type: ignore[union-attr]


def test_an_l2_collection_searches_its_shared_codebook_exactly_ranked(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = minilm
    raw = base[:12_000] * 3.0  # not normalised: l2 ranks by distance, not angle
    config = CollectionConfig("l", 384, metric="l2", segment_records=6000)
    coll = sealed(tmp_path, raw, windows=2, config=config)
    assert coll.coarse is not None and len(coll.segments) == 2
    coll.calibrate()
    q = prepare_vectors(config, queries * 3.0)
    d = ((q[:, None, :] - raw[None, :, :]) ** 2).sum(-1)
    want = [set(row.tolist()) for row in np.argsort(d, axis=1)[:, :10]]
    assert recall(coll, q, want) >= 0.94
    hit = coll.search(q[0], 1)[0]
    assert hit.distance == pytest.approx(float(np.sqrt(d[0].min())), rel=1e-4)  # exact, not the code's estimate


def test_a_repeated_filter_sees_deletes_and_metadata_edits_made_between_searches(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = minilm
    coll = sealed(tmp_path, base)
    spec = {"tag": "odd"}
    q = queries[3]
    first = [h.id for h in coll.search(q, 10, filter=spec)]
    assert len(first) == 10 and all(int(i) % 2 for i in first)
    assert all(s.filter_cache for s in coll.segments if s.live)  # the filter's rows are kept per segment
    coll.apply_delete([first[0]])
    coll.apply_metadata(first[1], {"tag": "even"})
    again = [h.id for h in coll.search(q, 10, filter=spec)]
    assert first[0] not in again and first[1] not in again and first[2:] == again[:8]
    coll.apply_metadata(first[1], {"tag": "odd"})
    assert first[1] in [h.id for h in coll.search(q, 10, filter=spec)]


def test_calibration_uses_the_collections_own_search_traffic_once_it_has_seen_enough(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray]) -> None:
    base, _ = minilm
    every = np.load(DATA / "queries.f16.npy", mmap_mode="r")[:600].astype(np.float32)
    every /= np.linalg.norm(every, axis=1, keepdims=True)
    traffic, held_out = every[:400], every[400:]
    coll = sealed(tmp_path, base)
    assert coll.calibrate()["queries"] == "records"
    for q in traffic:  # every 4th search is kept: 100 queries
        coll.search(q, 10)
    assert len(coll.observed_queries()) == 100
    assert np.allclose(coll.observed_queries()[1], traffic[4])
    result = coll.calibrate(0.95)
    assert result["queries"] == "searches" and result["sample"] == 100 and result["met"]
    assert len(coll.observed_queries()) == 100  # calibration's own searches are not traffic
    assert recall(coll, held_out, truth(base, held_out)) >= 0.94


def test_the_merged_lists_find_what_the_segments_scanned_one_by_one_find(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    base, queries = minilm
    first = 18_000
    coll = sealed(tmp_path, base[:first])
    coll.apply_delete([str(i) for i in range(0, first, 7)])
    options = {"rerank": 200}

    def hits(**extra: object) -> list[list[str]]:
        return [[h.id for h in coll.search(q, 10, include_metadata=False, **options, **extra)]  # type: ignore[arg-type]
                for q in queries[:40]]

    merged, merged_odd = hits(), hits(filter={"tag": "odd"})
    view = coll._view
    assert view is not None and len(view.members) == len(coll.segments) >= 2
    kept = len(view.members)
    with monkeypatch.context() as patched:
        patched.setattr(collection_module.Collection, "_shared_lists", lambda self, coarse, group: None)
        assert hits() == merged and hits(filter={"tag": "odd"}) == merged_odd
    assert all(int(i) % 7 for row in merged for i in row)
    assert all(int(i) % 2 for row in merged_odd for i in row)

    # a later migration's segment is merged after the kept ones; its rows are found
    add(coll, base[first:], start=first)
    migrate(coll, tmp_path)
    assert coll.search(base[first + 5], 1, include_metadata=False, **options)[0].id == str(first + 5)
    grown = coll._view
    assert grown is not view and grown is not None and grown.members[:kept] == view.members
    assert coll.coarse is not None
    assert len(grown.members) == len([s for s in coll.segments if s.codebook == coll.coarse.id]) > kept
    assert coll.search(base[7], 1, include_metadata=False, **options)[0].id != "7"  # deleted stays deleted


def test_a_search_pruned_to_a_few_segments_scans_them_one_by_one(
        tmp_path: Path, minilm: tuple[np.ndarray, np.ndarray]) -> None:
    base, _ = minilm
    coll = sealed(tmp_path, base)
    assert coll.coarse is not None
    group = list(enumerate(coll.segments))
    assert coll._shared_lists(coll.coarse, group) is not None
    assert coll._shared_lists(coll.coarse, group[:1]) is None
    assert coll._shared_lists(coll.coarse, group[:2]) is not None
