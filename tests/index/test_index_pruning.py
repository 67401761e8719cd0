"""Segment pruning (issue 19): the intervals a filter bounds its number/datetime fields to,
a payload index's value ranges, and a collection that skips segments they rule out."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from s5vec.index import (
    Collection, CollectionConfig, InvalidFilter, RawItem, SealedSegment, compile_filter, prepare_batch,
)
from s5vec.index.ivf import IvfSegment
from s5vec.index.payload import Interval, PayloadIndex, filter_intervals

FIELDS = {"n": "number", "t": "datetime", "k": "keyword"}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def micros(text: str) -> int:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return (parsed - EPOCH) // dt.timedelta(microseconds=1)


def test_a_conjunction_of_comparisons_bounds_each_field_to_their_intersection() -> None:
    spec = {"n": {"$gte": 3, "$lt": 10}, "$and": [{"n": {"$gt": 5}}, {"$and": [{"n": {"$lte": 9}}]}], "k": "x"}
    assert filter_intervals(spec, FIELDS) == {"n": Interval("number", 5, True, 9, False)}
    assert filter_intervals({"n": 4}, FIELDS) == {"n": Interval("number", 4, False, 4, False)}
    assert filter_intervals({"n": {"$eq": 4, "$gte": 4}}, FIELDS) == {"n": Interval("number", 4, False, 4, False)}


def test_datetime_operands_become_instants_in_microseconds_whatever_their_zone() -> None:
    spec = {"t": {"$gte": "2024-05-01T14:00:00+02:00", "$lt": "2024-06-01"}}
    assert filter_intervals(spec, FIELDS) == {
        "t": Interval("datetime", micros("2024-05-01T12:00:00Z"), False, micros("2024-06-01T00:00:00Z"), True)}


def test_branches_negations_and_operands_of_other_types_bound_nothing() -> None:
    for spec in ({"$or": [{"n": 1}, {"n": 2}]}, {"$not": {"n": 1}}, {"n": {"$not": {"$gt": 1}}},
                 {"n": {"$nin": [1]}}, {"n": {"$ne": 1}}, {"n": {"$in": [1, 2]}}, {"n": "7"}, {"n": True},
                 {"n": None}, {"n": float("nan")}, {"t": {"$gt": "abc"}}, {"t": 5}, {"k": {"$gt": "a"}},
                 {"undeclared": {"$gt": 1}}, {"n": [1, 2]}):
        assert filter_intervals(spec, FIELDS) == {}, spec


def test_a_filter_the_compiler_rejects_is_rejected_before_any_pruning() -> None:
    with pytest.raises(InvalidFilter):
        filter_intervals({"n": {"$gt": 1, "$bogus": 2}}, FIELDS)


def test_an_interval_meets_a_range_only_where_a_value_can_lie_in_both() -> None:
    above_five = Interval("number", 5, True, None, False)
    assert not above_five.meets(1, 5) and above_five.meets(1, 5.5)
    assert Interval("number", 5, False).meets(1, 5)
    assert not Interval("number", None, False, 5, True).meets(5, 9)
    assert not Interval("number", 7, False, 3, False).meets(0, 10)  # empty: $gte 7 and $lte 3
    assert not Interval("number", 3, True, 3, False).meets(0, 10)
    assert Interval("number", 2**60 + 1, False).meets(0, float(2**61))  # exact across int and float


def test_bounds_are_the_extremes_held_and_survive_deletes_but_not_new_values() -> None:
    index = PayloadIndex(FIELDS, 4)
    index.set([0, 1, 2, 3], [{"n": 5, "t": "2024-01-01"}, {"n": -2.5},
                             {"n": None, "t": "2023-01-01T00:00:00+01:00"}, {}])
    assert index.bounds("n") == (-2.5, 5.0)
    assert index.bounds("t") == (micros("2022-12-31T23:00:00Z"), micros("2024-01-01"))
    index.clear([1])
    assert index.bounds("n") == (-2.5, 5.0)  # kept: a delete only narrows the true range
    index.set([3], [{"n": 40}])
    assert index.bounds("n") == (5.0, 40.0)
    assert PayloadIndex(FIELDS, 2).bounds("n") is None
    with pytest.raises(KeyError):
        index.bounds("k")


def test_a_field_holding_arrays_is_never_pruned_on() -> None:
    index = PayloadIndex(FIELDS, 1)
    index.set([0], [{"n": [10, 1]}])  # matches {"$gt": 5, "$lt": 3} through array membership
    spec = {"n": {"$gt": 5, "$lt": 3}}
    assert index.mask(spec, 1) is None
    assert index.may_match(filter_intervals(spec, FIELDS))


NUMBERS = st.sampled_from([-3, 0, 1, 2, 5, 0.5, 2.5, -0.0, 1e300, float("inf"), float("nan"), 2**60, 2**60 + 1])
DATES = st.sampled_from(["2024-05-01T12:00:00Z", "2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00.000001",
                         "2023-12-31", "2024-05-02T00:00:00-05:00", "abc", "2024"])
SCALARS = st.one_of(NUMBERS, DATES, st.booleans(), st.none())
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))
DOCS = st.fixed_dictionaries({}, optional={"n": VALUES, "t": VALUES, "k": st.sampled_from(["a", "b"])})
OPS = st.sampled_from(["$eq", "$gt", "$gte", "$lt", "$lte", "$ne", "$in", "$nin"])


@st.composite
def conditions(draw: Any) -> dict[str, Any]:
    field = draw(st.sampled_from(["n", "t", "k"]))
    op = draw(OPS)
    arg = draw(st.lists(SCALARS, min_size=1, max_size=3)) if op in ("$in", "$nin") else draw(SCALARS)
    return {field: arg} if op == "$eq" and draw(st.booleans()) else {field: {op: arg}}


FILTERS = st.recursive(conditions(), lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"$and": xs}),
    st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"$or": xs}),
    inner.map(lambda x: {"$not": x}),
    st.tuples(inner, inner).map(lambda xs: {**xs[0], **xs[1]}),
), max_leaves=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(DOCS, min_size=1, max_size=6), spec=FILTERS, deleted=st.sets(st.integers(0, 5)))
def test_an_index_ruled_out_by_a_filters_intervals_holds_no_record_that_matches_it(
        docs: list[dict[str, Any]], spec: dict[str, Any], deleted: set[int]) -> None:
    try:
        matches = compile_filter(spec)
    except InvalidFilter:  # ordering against null or a bool: the compiler's to reject
        assume(False)
    index = PayloadIndex(FIELDS, len(docs))
    index.set(np.arange(len(docs)), docs)
    index.bounds("n"), index.bounds("t")  # cached before the deletes, as a segment's would be
    index.clear([i for i in deleted if i < len(docs)])
    live = [doc for i, doc in enumerate(docs) if i not in deleted]
    intervals = filter_intervals(spec, FIELDS)
    if not index.may_match(intervals):
        event("ruled out")
        assert not any(matches(doc) for doc in live)
    for doc in live:  # a matching record's single value lies inside its field's interval
        if matches(doc):
            for path, interval in intervals.items():
                single = PayloadIndex(FIELDS, 1)
                single.set([0], [doc])
                if single.may_match({path: interval}) is False:
                    raise AssertionError((doc, path, interval))


# ------------------------------------------------------------------ collection
DIM = 8
DAY = 86_400.0


def segmented(tmp_path: Path, per: int = 60, windows: int = 5) -> tuple[Collection, np.ndarray]:
    """A collection with one sealed segment per day-window, each holding a day of mintDateTime
    and a band of "n" (correlated with the window), plus a few recent records."""
    config = CollectionConfig("p", DIM, payload=(("mintDateTime", "datetime"), ("n", "number"), ("k", "keyword")),
                              ivf_nlist=4, segment_records=per)
    coll = Collection(config, tmp_path)
    rng = np.random.default_rng(19)
    start = FIRST_DAY * DAY
    items = []
    for w in range(windows):
        for i in range(per):
            when = start + w * DAY + i * 60
            minted = dt.datetime.fromtimestamp(when, dt.timezone.utc).isoformat()
            items.append(RawItem(f"{w}-{i}", rng.normal(size=DIM), {"mintDateTime": minted, "n": 100 * w + i,
                                                                    "k": "ab"[i % 2]}, when))
    items += [RawItem(f"r{i}", rng.normal(size=DIM), {"n": 50 + i, "k": "a"}) for i in range(20)]
    batch, errors = prepare_batch(config, items)
    assert not errors
    coll.apply_upsert(batch)
    plan = coll.plan_migration()
    assert plan is not None
    coll.commit_migration(plan, coll.build_migration(plan, tmp_path))
    assert len(coll.segments) == windows
    return coll, rng.normal(size=(8, DIM)).astype(np.float32)


FIRST_DAY = time.time() // DAY - 60  # one anchor for the data and the filters (SPECS), even across midnight


def day(w: int, hour: int = 0) -> str:
    return dt.datetime.fromtimestamp((FIRST_DAY + w) * DAY + hour * 3600, dt.timezone.utc).isoformat()


SPECS: list[dict[str, Any]] = [
    {"n": {"$gte": 100, "$lt": 200}},
    {"n": {"$gt": 230}, "k": "a"},
    {"$and": [{"n": {"$lte": 30}}, {"$or": [{"k": "a"}, {"k": "b"}]}]},
    {"mintDateTime": {"$gte": day(2), "$lt": day(3)}},
    {"mintDateTime": {"$gte": day(3, 12)}},
    {"n": 301},
    {"n": {"$gt": 10_000}},
    {"$or": [{"n": {"$lt": 5}}, {"n": {"$gt": 450}}]},  # cannot prune: searches everything
]


def test_filtered_searches_skip_segments_outside_the_filters_ranges_with_the_same_results(tmp_path: Path) -> None:
    coll, queries = segmented(tmp_path)
    for spec in SPECS:
        coll.prune_segments = False
        full = [[h.id for h in hits] for hits in coll.search_batch(queries, 20, filter=spec)]
        full_ids = sorted(coll.ids_matching(spec))
        coll.prune_segments = True
        before = coll.stats()
        pruned = [[h.id for h in hits] for hits in coll.search_batch(queries, 20, filter=spec)]
        after = coll.stats()
        assert pruned == full, spec
        assert sorted(coll.ids_matching(spec)) == full_ids, spec
        skipped = after["segments_pruned"] - before["segments_pruned"]
        searched = after["segments_searched"] - before["segments_searched"]
        assert skipped + searched == 5
        expected = {0: 4, 1: 2, 2: 4, 3: 4, 4: 4, 5: 4, 6: 5, 7: 0}[SPECS.index(spec)]
        assert skipped == expected, spec


def test_a_pruned_segment_of_a_restarted_collection_is_never_loaded(tmp_path: Path) -> None:
    coll, queries = segmented(tmp_path, per=40, windows=3)
    snap = coll.snapshot()
    segments = []
    for seg, mutable, _ in snap.segments:
        frozen = seg.frozen_parts()
        path = tmp_path / f"lazy{seg.seq}.f32"
        ivf_parts = {**frozen["ivf"], "index": frozen["blobs"]["index"], "vectors": frozen["blobs"]["vectors"]}
        segments.append(SealedSegment.from_parts(frozen, mutable, path,
                                                 load_ivf=lambda p=ivf_parts, f=path: IvfSegment.from_parts(p, f)))
    coll.close()
    restored = Collection.restore(snap.config, snap.recent, segments, tmp_path)
    hits = restored.search(queries[0], 5, filter={"mintDateTime": {"$gte": day(2)}})
    assert hits and all(h.id.startswith("2-") for h in hits)
    assert [getattr(s.ivf, "loaded") for s in restored.segments] == [False, False, True]
    assert restored.stats()["segments_pruned"] == 2
