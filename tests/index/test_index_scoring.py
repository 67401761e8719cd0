"""Re-rank stage: merging tier results, time decay and popularity scoring."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s5vec.index import Hit, InvalidRecord
from s5vec.index.scoring import (
    DecaySpec, InvalidScoring, PopularitySpec, ScoringSpec, candidate_count, decay_factors, merge, rerank,
    validate,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = 86_400.0


def hit(record_id: str, score: float, distance: float | None = None, timestamp: float | None = NOW,
        **metadata: Any) -> Hit:
    return Hit(record_id, 1.0 - score if distance is None else distance, score, metadata, None, timestamp)


def ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


def scores(hits: list[Hit]) -> dict[str, float]:
    return {h.id: h.score for h in hits}


# ---------------------------------------------------------------------------------- merge
RECENT = [hit("a", 0.9, views=1), hit("b", 0.7), hit("c", 0.5)]
HISTORICAL = [hit("b", 0.8, views=2), hit("d", 0.6), hit("a", 0.3)]


def test_take_best_keeps_the_best_scoring_copy_of_each_id() -> None:
    merged = merge([RECENT, HISTORICAL], k=10)
    assert ids(merged) == ["a", "b", "d", "c"]
    assert scores(merged) == {"a": 0.9, "b": 0.8, "d": 0.6, "c": 0.5}
    assert merged[1].metadata == {"views": 2} and merged[1].distance == pytest.approx(0.2)


def test_merge_truncates_to_k_after_deduplicating() -> None:
    assert ids(merge([RECENT, HISTORICAL], k=2)) == ["a", "b"]
    assert merge([RECENT, HISTORICAL], k=0) == []
    assert merge([], k=5) == [] and merge([[], []], k=5) == []


def test_average_does_not_penalise_ids_missing_from_a_tier() -> None:
    merged = merge([RECENT, HISTORICAL], k=10, strategy="average")
    assert scores(merged) == pytest.approx({"a": 0.6, "b": 0.75, "c": 0.5, "d": 0.6})
    # a and d tie at 0.6: a goes first, its best copy being closer (distance 0.1 against 0.4)
    assert ids(merged) == ["b", "a", "d", "c"]


def test_average_counts_one_copy_per_tier() -> None:
    tier = [hit("x", 0.9), hit("x", 0.1)]
    assert scores(merge([tier, [hit("x", 0.5)]], k=5, strategy="average")) == pytest.approx({"x": 0.7})


def test_weighted_scales_each_tier_then_takes_the_best() -> None:
    merged = merge([RECENT, HISTORICAL], k=10, strategy="weighted", weights=[0.5, 1.0])
    assert scores(merged) == pytest.approx({"a": 0.45, "b": 0.8, "c": 0.25, "d": 0.6})
    assert ids(merged) == ["b", "d", "a", "c"]
    assert scores(merge([RECENT, HISTORICAL], k=10, strategy="weighted")) == \
        scores(merge([RECENT, HISTORICAL], k=10))


def test_merge_breaks_score_ties_by_distance_then_id() -> None:
    tier = [hit("z", 0.5, distance=0.1), hit("y", 0.5, distance=0.2), hit("x", 0.5, distance=0.1)]
    assert ids(merge([tier], k=3)) == ["x", "z", "y"]


def test_merge_keeps_the_closer_copy_on_equal_scores_and_else_the_earlier_tier() -> None:
    near, far = hit("a", 0.5, distance=0.1, tier="ivf"), hit("a", 0.5, distance=0.3, tier="hnsw")
    assert merge([[far], [near]], k=1)[0].metadata == {"tier": "ivf"}
    first, second = hit("a", 0.5, tier="hnsw"), hit("a", 0.5, tier="ivf")
    assert merge([[first], [second]], k=1)[0].metadata == {"tier": "hnsw"}


def test_merge_returns_new_hits_and_leaves_inputs_alone() -> None:
    tier = [hit("a", 0.8)]
    merged = merge([tier, [hit("a", 0.4)]], k=1, strategy="average")
    assert merged[0] is not tier[0] and tier[0].score == 0.8 and merged[0].score == pytest.approx(0.6)


@pytest.mark.parametrize("kwargs,field", [
    ({"strategy": "max"}, "strategy"),
    ({"strategy": "weighted", "weights": [1.0]}, "weights"),
    ({"strategy": "weighted", "weights": [1.0, -0.5]}, "weights"),
    ({"strategy": "weighted", "weights": [1.0, math.nan]}, "weights"),
    ({"strategy": "take_best", "weights": [1.0, 1.0]}, "weights"),
    ({"k": -1}, "k"),
])
def test_merge_rejects_bad_arguments_naming_the_parameter(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"k": 5, **kwargs}
    with pytest.raises(ValueError, match=f"^{field}:") as info:
        merge([RECENT, HISTORICAL], **args)
    assert isinstance(info.value, InvalidRecord) and info.value.field == field


# ---------------------------------------------------------------------------------- decay
@pytest.mark.parametrize("function", ["exp", "gauss", "linear"])
def test_every_decay_function_is_one_at_age_zero_and_half_at_the_half_life(function: str) -> None:
    spec = ScoringSpec(decay=DecaySpec(function=function, half_life_s=DAY))  # type: ignore[arg-type]
    hits = [hit("new", 1.0, timestamp=NOW), hit("half", 1.0, timestamp=NOW - DAY)]
    assert scores(rerank(hits, spec, NOW, 10)) == pytest.approx({"new": 1.0, "half": 0.5})
    factors = decay_factors(function, np.array([0.0, DAY, 3 * DAY]), DAY)
    assert factors[:2] == pytest.approx([1.0, 0.5])
    assert 0.0 <= factors[2] < 0.5


def test_linear_decay_reaches_zero_at_twice_the_half_life() -> None:
    assert decay_factors("linear", np.array([1.5 * DAY, 2 * DAY, 9 * DAY]), DAY) == pytest.approx([0.25, 0, 0])


def test_future_timestamps_are_not_boosted_beyond_one() -> None:
    spec = ScoringSpec(decay=DecaySpec(half_life_s=DAY))
    assert rerank([hit("future", 0.8, timestamp=NOW + 10 * DAY)], spec, NOW, 1)[0].score == pytest.approx(0.8)


def test_decay_weight_blends_between_no_decay_and_full_decay() -> None:
    spec = ScoringSpec(decay=DecaySpec(half_life_s=DAY, weight=0.4))
    # factor = 0.6 + 0.4 * 0.5
    assert rerank([hit("a", 0.5, timestamp=NOW - DAY)], spec, NOW, 1)[0].score == pytest.approx(0.4)


def test_decay_reads_an_iso_datetime_metadata_field() -> None:
    spec = ScoringSpec(decay=DecaySpec(field="mintDateTime", half_life_s=30 * DAY,
                                       origin="2024-06-01T00:00:00Z"))
    hits = [hit("old", 0.9, mintDateTime="2024-05-02T00:00:00Z"),       # 30 days before origin
            hit("fresh", 0.6, mintDateTime="2024-06-01T02:00:00+02:00"),  # exactly the origin
            hit("undated", 0.95)]
    ranked = rerank(hits, spec, NOW, 10)  # origin overrides now
    assert scores(ranked) == pytest.approx({"fresh": 0.6, "old": 0.45, "undated": 0.0})
    assert ids(ranked) == ["fresh", "old", "undated"]


def test_decay_reads_unix_seconds_milliseconds_and_attribute_lists() -> None:
    spec = ScoringSpec(decay=DecaySpec(field="attributes.minted", half_life_s=DAY))
    hits = [hit("s", 1.0, attributes=[{"key": "minted", "value": NOW - DAY}]),
            hit("ms", 1.0, attributes=[{"key": "minted", "value": (NOW - 2 * DAY) * 1000}]),
            hit("bad", 1.0, attributes=[{"key": "minted", "value": "yesterday"}])]
    assert scores(rerank(hits, spec, NOW, 10)) == pytest.approx({"s": 0.5, "ms": 0.25, "bad": 0.0})


def test_decay_and_popularity_use_the_latest_date_and_the_largest_number_of_an_array() -> None:
    spec = ScoringSpec(decay=DecaySpec(field="dates", half_life_s=DAY, origin="2024-01-03T00:00:00Z"),
                       popularity=PopularitySpec(weight=0.5, scale=100))
    hits = [hit("a", 0.8, dates=["2023-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "soon"], views=[3, 100, -7])]
    assert rerank(hits, spec, NOW, 1)[0].score == pytest.approx(0.8 * 0.5 + 0.5)


def test_decay_on_the_record_timestamp_ranks_recent_records_first() -> None:
    spec = ScoringSpec(decay=DecaySpec(function="gauss", half_life_s=7 * DAY))
    hits = [hit("old-close", 0.9, timestamp=NOW - 14 * DAY), hit("new-far", 0.7, timestamp=NOW - DAY),
            hit("no-time", 0.99, timestamp=None)]
    ranked = rerank(hits, spec, NOW, 10)
    assert ids(ranked) == ["new-far", "old-close", "no-time"]
    assert ranked[1].score == pytest.approx(0.9 * 0.5 ** 4)


def test_decay_never_lifts_a_negative_inner_product_score() -> None:
    spec = ScoringSpec(decay=DecaySpec(half_life_s=DAY))
    hits = [hit("new", -0.5, timestamp=NOW), hit("old", -0.5, timestamp=NOW - DAY)]
    ranked = rerank(hits, spec, NOW, 10)
    assert ids(ranked) == ["new", "old"] and ranked[1].score == pytest.approx(-0.75)


# ----------------------------------------------------------------------------- popularity
def test_popularity_boost_is_zero_without_views_and_weight_at_the_scale() -> None:
    spec = ScoringSpec(popularity=PopularitySpec(weight=0.2, scale=1000))
    hits = [hit("zero", 0.5, views=0), hit("none", 0.5), hit("negative", 0.5, views=-5),
            hit("text", 0.5, views="1000"), hit("scale", 0.5, views=1000)]
    assert scores(rerank(hits, spec, NOW, 10)) == pytest.approx(
        {"zero": 0.5, "none": 0.5, "negative": 0.5, "text": 0.5, "scale": 0.7})


@given(st.lists(st.integers(0, 10**12), min_size=2, max_size=20))
@settings(max_examples=50, deadline=None)
def test_popularity_boost_is_monotone_in_views(views: list[int]) -> None:
    spec = ScoringSpec(popularity=PopularitySpec())
    ranked = rerank([hit(str(i), 0.5, views=v) for i, v in enumerate(views)], spec, NOW, len(views))
    by_views = sorted(ranked, key=lambda h: views[int(h.id)])
    assert all(a.score <= b.score for a, b in zip(by_views, by_views[1:]))


def test_decay_and_popularity_together_reorder_a_handmade_result_list() -> None:
    spec = ScoringSpec(decay=DecaySpec(half_life_s=30 * DAY, weight=0.5),
                       popularity=PopularitySpec(weight=0.1, scale=1_000_000))
    hits = [
        hit("old-obscure", 0.90, timestamp=NOW - 60 * DAY, views=10),      # 0.9 * 0.625 + 0.1 * log1p(10)/log1p(1e6)
        hit("new-obscure", 0.80, timestamp=NOW, views=0),                   # 0.8
        hit("old-viral", 0.70, timestamp=NOW - 30 * DAY, views=1_000_000),  # 0.7 * 0.75 + 0.1
        hit("new-viral", 0.60, timestamp=NOW - 1, views=5_000_000),         # ~0.6 + 0.1116
    ]
    assert ids(sorted(hits, key=lambda h: -h.score)) == ["old-obscure", "new-obscure", "old-viral", "new-viral"]
    ranked = rerank(hits, spec, NOW, 3)
    assert ids(ranked) == ["new-obscure", "new-viral", "old-viral"]
    assert scores(ranked)["old-viral"] == pytest.approx(0.625)
    assert all(r.distance == h.distance for r in ranked for h in hits if h.id == r.id)


def test_rerank_without_scoring_just_orders_deduplicates_and_truncates() -> None:
    hits = [hit("a", 0.2), hit("b", 0.9), hit("a", 0.4), hit("c", 0.5)]
    ranked = rerank(hits, ScoringSpec(), NOW, 2)
    assert ids(ranked) == ["b", "c"] and ranked[0] is not hits[1]
    assert scores(rerank(hits, ScoringSpec(), NOW, 5)) == {"b": 0.9, "c": 0.5, "a": 0.4}
    assert rerank(hits, ScoringSpec(), NOW, 0) == [] and rerank([], ScoringSpec(), NOW, 5) == []


# --------------------------------------------------------------------- property: rerank
def reference_score(h: Hit, spec: ScoringSpec, now: float) -> float:
    """The docstring formulas, one hit at a time."""
    score = h.score
    if spec.decay is not None:
        d = spec.decay
        if h.timestamp is None:
            curve = 0.0
        else:
            r = max(0.0, now - h.timestamp) / d.half_life_s
            curve = {"exp": 0.5 ** r, "gauss": math.exp(-math.log(2) * r * r), "linear": max(0.0, 1 - r / 2)}[d.function]
        factor = (1 - d.weight) + d.weight * curve
        score = score - abs(score) * (1 - factor)
    if spec.popularity is not None:
        p = spec.popularity
        views = (h.metadata or {}).get("views")
        score += p.weight * math.log1p(max(views or 0, 0)) / math.log1p(p.scale)
    return score


HITS = st.lists(st.builds(
    hit,
    record_id=st.sampled_from("abcdefghij"),
    score=st.floats(-1, 1),
    distance=st.floats(0, 4),
    timestamp=st.none() | st.floats(NOW - 400 * DAY, NOW + DAY),
    views=st.none() | st.integers(-10, 10**9),
), max_size=40)
SPECS = st.builds(
    ScoringSpec,
    decay=st.none() | st.builds(DecaySpec, function=st.sampled_from(["exp", "gauss", "linear"]),
                                half_life_s=st.floats(1, 100 * DAY), weight=st.floats(0, 1)),
    popularity=st.none() | st.builds(PopularitySpec, weight=st.floats(0, 1), scale=st.floats(1.5, 1e9)),
)


@given(HITS, SPECS, st.integers(0, 15))
@settings(max_examples=200, deadline=None)
def test_rerank_returns_the_best_copy_of_distinct_input_ids_sorted_by_score(
        hits: list[Hit], spec: ScoringSpec, k: int) -> None:
    ranked = rerank(hits, spec, NOW, k)
    unique = {h.id for h in hits}
    assert len(ranked) == min(k, len(unique))
    assert len(set(ids(ranked))) == len(ranked) and set(ids(ranked)) <= unique
    keys = [(-h.score, h.distance, h.id) for h in ranked]
    assert keys == sorted(keys)
    for r in ranked:
        best = max(reference_score(h, spec, NOW) for h in hits if h.id == r.id)
        assert r.score == pytest.approx(best, rel=1e-9, abs=1e-12)
    if ranked and k < len(unique):  # nothing left out beats the last one kept
        left_out = unique - set(ids(ranked))
        assert all(reference_score(h, spec, NOW) <= ranked[-1].score + 1e-9 for h in hits if h.id in left_out)


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("spec,field", [
    (ScoringSpec(decay=DecaySpec(half_life_s=0)), "decay.half_life_s"),
    (ScoringSpec(decay=DecaySpec(half_life_s=math.inf)), "decay.half_life_s"),
    (ScoringSpec(decay=DecaySpec(half_life_s=1, weight=1.5)), "decay.weight"),
    (ScoringSpec(decay=DecaySpec(half_life_s=1, weight=-0.1)), "decay.weight"),
    (ScoringSpec(decay=DecaySpec(half_life_s=1, function="cubic")), "decay.function"),  # type: ignore[arg-type]
    (ScoringSpec(decay=DecaySpec(half_life_s=1, field="a..b")), "decay.field"),
    (ScoringSpec(decay=DecaySpec(half_life_s=1, origin="last tuesday")), "decay.origin"),
    (ScoringSpec(popularity=PopularitySpec(weight=2)), "popularity.weight"),
    (ScoringSpec(popularity=PopularitySpec(scale=1)), "popularity.scale"),
    (ScoringSpec(popularity=PopularitySpec(field="")), "popularity.field"),
])
def test_validation_errors_name_the_field(spec: ScoringSpec, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:") as info:
        validate(spec)
    assert isinstance(info.value, InvalidScoring) and info.value.field == field
    with pytest.raises(InvalidScoring, match=f"^{field}:"):
        rerank([hit("a", 0.5)], spec, NOW, 1)


def test_a_json_spec_decodes_into_structs() -> None:
    raw = b'{"decay": {"function": "gauss", "field": "mintDateTime", "half_life_s": 86400, ' \
          b'"origin": "2024-06-01T00:00:00Z"}, "popularity": {"weight": 0.2}}'
    spec = msgspec.json.decode(raw, type=ScoringSpec)
    validate(spec)
    assert spec.decay == DecaySpec(function="gauss", field="mintDateTime", half_life_s=86400.0,
                                   origin="2024-06-01T00:00:00Z")
    assert spec.popularity == PopularitySpec(weight=0.2)


@pytest.mark.parametrize("raw,needle", [
    (b'{"decay": {"half_life_s": 10, "halflife": 3}}', "unknown field `halflife` - at `$.decay`"),
    (b'{"boost": {}}', "unknown field `boost`"),
    (b'{"decay": {"weight": 0.5}}', "missing required field `half_life_s` - at `$.decay`"),
    (b'{"decay": {"half_life_s": -1}}', "`$.decay.half_life_s`"),
    (b'{"popularity": {"scale": 0.5}}', "`$.popularity.scale`"),
    (b'{"decay": {"half_life_s": 1, "function": "cubic"}}', "`$.decay.function`"),
])
def test_decoding_a_bad_json_spec_names_the_field(raw: bytes, needle: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(raw, type=ScoringSpec)
    assert needle in str(info.value)


def test_candidate_count_over_fetches_within_the_limit() -> None:
    assert candidate_count(10) == 100 and candidate_count(50) == 200 and candidate_count(400) == 1000
    assert candidate_count(2000, limit=1000) == 2000
