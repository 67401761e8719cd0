"""Segment upkeep at the index level: list sizes and skew, rebuilds that replay concurrent
deletes and metadata edits, tombstone-ratio compaction of the recent tier."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from s5vec.index import Collection, CollectionConfig, RawItem, prepare_batch
from s5vec.index.ivf import Codebook, IvfParams, IvfSegment, list_skew

DIM = 8
OLD = time.time() - 30 * 86_400


def build(rows: np.ndarray, metric: str, params: IvfParams, path: Path) -> IvfSegment:
    return IvfSegment.build(rows, Codebook.train(rows, metric, params), path)


def filled(tmp_path: Path, count: int, timestamp: float | None = None) -> Collection:
    coll = Collection(CollectionConfig("c", DIM, segment_records=100_000), tmp_path)
    rng = np.random.default_rng(1)
    batch, errors = prepare_batch(coll.config, [RawItem(f"r{i}", rng.normal(size=DIM).astype(np.float32),
                                                        {"i": i}, timestamp) for i in range(count)])
    assert not errors
    coll.apply_upsert(batch)
    return coll


def test_list_sizes_count_rows_per_list_without_deleted_ones(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(2000, DIM)).astype(np.float32)
    segment = build(rows, "l2", IvfParams(quantizer="sq8"), tmp_path / "s.f32")
    sizes = segment.list_sizes()
    assert len(sizes) == segment.nlist and sizes.sum() == 2000
    deleted = np.zeros(2000, bool)
    deleted[:500] = True
    assert segment.list_sizes(deleted).sum() == 1500
    assert list_skew(np.array([5, 5, 5, 5])) == 1.0 and list_skew(np.array([8, 0, 0, 0])) == 4.0
    assert list_skew(np.zeros(3, np.int64)) == 1.0
    small = build(rows[:10], "l2", IvfParams(), tmp_path / "t.f32")
    assert small.list_sizes().tolist() == [10]


def test_a_rebuild_keeps_deletes_and_edits_made_while_it_trained(tmp_path: Path) -> None:
    coll = filled(tmp_path, 1500, OLD)
    plan = coll.plan_migration()
    assert plan is not None
    coll.commit_migration(plan, coll.build_migration(plan, tmp_path))
    coll.apply_delete([f"r{i}" for i in range(0, 1500, 3)])  # before planning the rebuild
    (segment,) = coll.segments
    rebuild = coll.plan_rebuild(segment.seq)
    assert rebuild is not None and rebuild.rows == 1000
    coll.apply_delete(["r1", "r2"])  # while it trains
    coll.apply_metadata("r4", {"edited": True})
    built = coll.build_rebuild(rebuild, tmp_path)
    assert coll.commit_rebuild(rebuild, built)
    (fresh,) = coll.segments
    assert fresh is built and fresh.seq != segment.seq and fresh.n == 1000 and fresh.live == 998
    assert not coll.contains("r1") and not coll.contains("r3") and coll.get("r4").metadata == {"edited": True}
    assert coll.get("r5").metadata == {"i": 5}
    hits = coll.search(coll.get("r7").vector, k=1)
    assert hits[0].id == "r7"
    assert not coll.commit_rebuild(rebuild, built)  # the old segment is gone: nothing to swap
    segment.close()


def test_a_segment_with_no_live_rows_is_removed_by_a_rebuild(tmp_path: Path) -> None:
    coll = filled(tmp_path, 50, OLD)
    plan = coll.plan_migration()
    assert plan is not None
    coll.commit_migration(plan, coll.build_migration(plan, tmp_path))
    coll.apply_delete([f"r{i}" for i in range(50)])
    rebuild = coll.plan_rebuild(coll.segments[0].seq)
    assert rebuild is not None and coll.build_rebuild(rebuild, tmp_path) is None
    assert coll.commit_rebuild(rebuild, None) and coll.segments == []
    assert coll.plan_rebuild(12345) is None


def test_compaction_honours_a_tombstone_ratio(tmp_path: Path) -> None:
    coll = filled(tmp_path, 100)
    while coll.drain(256):
        pass
    coll.apply_delete([f"r{i}" for i in range(30)])
    assert round(coll.tombstone_ratio, 2) == 0.3
    assert not coll.compact(min_ratio=0.5) and not coll.compact()  # default rule: > 1024 tombstones
    assert coll.compact(min_ratio=0.25)
    assert coll.tombstone_ratio == 0.0 and len(coll) == 70 and coll.get("r99").metadata == {"i": 99}


def migrated_in_steps(tmp_path: Path, steps: int, per_step: int) -> Collection:
    """One migration per step, as the daemon's schedule makes them: a small segment each."""
    coll = Collection(CollectionConfig("c", DIM, segment_records=1000), tmp_path)
    rng = np.random.default_rng(2)
    for step in range(steps):
        items = [RawItem(f"s{step}-{i}", rng.normal(size=DIM).astype(np.float32), {"step": step, "i": i},
                         OLD + step * 3600 + i) for i in range(per_step)]
        batch, errors = prepare_batch(coll.config, items)
        assert not errors
        coll.apply_upsert(batch)
        plan = coll.plan_migration()
        assert plan is not None
        coll.commit_migration(plan, coll.build_migration(plan, tmp_path))
    return coll


def test_runs_of_small_segments_are_merge_candidates_up_to_segment_records(tmp_path: Path) -> None:
    coll = migrated_in_steps(tmp_path, 7, 200)
    seqs = [s.seq for s in coll.segments]
    assert len(seqs) == 7 and coll.config.segment_records == 1000
    # each 200 < 0.25 * 1000 is small; a run closes before it would pass 1000 rows
    assert coll.merge_candidates() == [seqs[:5], seqs[5:]]
    coll.apply_delete([f"s6-{i}" for i in range(200)])
    assert coll.merge_candidates(small=0.1) == []  # 200 >= 100 rows is not small; the emptied s6 alone is no run


def test_a_merge_replaces_its_segments_with_one_and_replays_deletes_and_edits(tmp_path: Path) -> None:
    coll = migrated_in_steps(tmp_path, 4, 200)
    old = list(coll.segments)
    probe = {key: coll.get(key).vector for key in ("s0-5", "s2-7", "s3-199")}
    coll.apply_delete(["s0-0", "s1-0"])  # before planning
    (group,) = coll.merge_candidates()
    plan = coll.plan_rebuild(group)
    assert plan is not None and plan.rows == 798 and len(plan.sources) == 4
    coll.apply_delete(["s1-1", "s3-3"])  # while it trains
    coll.apply_metadata("s2-2", {"edited": True})
    built = coll.build_rebuild(plan, tmp_path)
    assert built is not None and coll.commit_rebuild(plan, built)
    assert coll.segments == [built] and built.n == 798 and built.live == 796 and len(coll) == 796
    for gone in ("s0-0", "s1-0", "s1-1", "s3-3"):
        assert not coll.contains(gone)
    assert coll.get("s2-2").metadata == {"edited": True} and coll.get("s2-3").metadata == {"step": 2, "i": 3}
    for key, vector in probe.items():
        assert coll.search(vector, k=1)[0].id == key
    assert not coll.commit_rebuild(plan, built)  # its segments are gone: nothing to swap
    assert coll.plan_rebuild([old[0].seq, 999]) is None
    for segment in old:
        segment.close()
