"""Payload indexes: masks agree with compile_filter record for record, or decline (None)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s5vec.index import InvalidFilter, InvalidRecord, compile_filter
from s5vec.index.payload import FIELD_TYPES, PayloadIndex

FIELDS = {
    "genre": "keyword", "type": "keyword", "views": "number", "attributes.runtime": "number",
    "mintDateTime": "datetime", "hd": "bool",
}
GENRES = ["drama", "comedy", "sci-fi", "crime"]
# Date-like keywords: compile_filter orders those by instant when the operand is a date too.
TYPES = ["video", "audio", "image", "2024-05-01T14:00:00+02:00", "2024-05-01T11:00:00Z"]
ZONES = [dt.timezone.utc, dt.timezone(dt.timedelta(hours=1)), dt.timezone(dt.timedelta(hours=-5)),
         dt.timezone(dt.timedelta(hours=5, minutes=30))]
INSTANTS = [dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc),
            dt.datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=dt.timezone.utc),
            dt.datetime(2023, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc),
            dt.datetime(2024, 5, 2, tzinfo=dt.timezone.utc)]
SHAPES = ["iso", "z", "naive", "date", "space"]
RUNTIMES = [60, 90, 120, 180]
NUMBERS: list[Any] = [-3, 0, 1, 2, 5, 116, 0.5, 2.5, -0.0, 1e300, float("inf"), float("nan"), 2**60]
OTHER_STRINGS = ["", "zzz", "2024", "2024-05", "abc", "2024-05-01T12", "Video"]
OPERANDS: list[Any] = [*GENRES, *TYPES, *NUMBERS, *OTHER_STRINGS, True, False, None, {"a": 1}, 6, -1, 1.5, 90]
ORDERABLE = [o for o in OPERANDS if isinstance(o, (int, float, str)) and not isinstance(o, bool)]


def render_date(instant: dt.datetime, zone: dt.timezone, shape: str) -> str:
    local = instant.astimezone(zone)
    if shape == "z" and local.utcoffset() == dt.timedelta(0):
        return local.replace(tzinfo=None).isoformat() + "Z"
    if shape == "naive":
        return local.replace(tzinfo=None).isoformat()
    if shape == "date":
        return local.date().isoformat()
    if shape == "space":
        return local.isoformat(sep=" ")
    return local.isoformat()


# The same few instants written in several offsets and shapes, so equal instants with
# unequal strings are common.
DATES = sorted({render_date(i, z, s) for i in INSTANTS for z in ZONES for s in SHAPES})
# Operands each field's values often match, plus the cross-type traps for that field.
FIELD_OPERANDS: dict[str, list[Any]] = {
    "genre": [*GENRES, None, 1, True, "", "Drama", {"a": 1}],
    "type": [*TYPES, "data", None, 0, False],
    "title": ["Heat", "Arrival", None],
    "views": [*range(-3, 7), 0.5, 2.5, float("nan"), float("inf"), -0.0, 2**60, True, False, None, "3", "1", [1]],
    "attributes.runtime": [*RUNTIMES, 90.0, 100, None, "90", True],
    "mintDateTime": [*DATES, None, "2024", "abc", 1714564800, True],
    "hd": [True, False, 1, 0, 1.0, None, "true"],
}
FIELD_ORDERABLES: dict[str, list[Any]] = {
    "genre": ["crime", "d", "drama", "sci", "2024-05-01"],
    "type": ["audio", "b", "video", "w", *DATES],
    "title": ["B", "Heat"],
    "views": [*range(-3, 7), 0.5, float("nan"), float("inf"), -0.0, "3"],
    "attributes.runtime": [*RUNTIMES, 100, 89.5, "90"],
    "mintDateTime": [*DATES, "2024", "2024-05-01T12", "2024-05-01T12:00:00+0", "abc", "2025", 1714564800],
    "hd": [0, 1, "true"],
}
LIST_OPERANDS: list[Any] = [["drama"], ["drama", "comedy"], [], [1], [None], ["comedy", None]]


def random_operand(rng: random.Random, field: str, lists: bool) -> Any:
    roll = rng.random()
    if lists and roll < 0.1:
        return rng.choice(LIST_OPERANDS)
    return rng.choice(FIELD_OPERANDS[field] if roll < 0.7 else OPERANDS)


def random_condition(rng: random.Random, field: str, lists: bool, depth: int = 1) -> Any:
    """A field condition: a bare operand (implicit $eq) or 1-3 operators, $not nested once."""
    if depth and rng.random() < 0.3:
        return random_operand(rng, field, lists)
    ops: dict[str, Any] = {}
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["$eq", "$ne", "order", "order", "$in", "$nin", "$exists", *(["$not"] if depth else [])])
        if kind == "order":
            pool = FIELD_ORDERABLES[field] if rng.random() < 0.7 else ORDERABLE
            ops[rng.choice(["$gt", "$gte", "$lt", "$lte"])] = rng.choice(pool)
        elif kind in ("$in", "$nin"):
            ops[kind] = [random_operand(rng, field, lists) for _ in range(rng.randint(0, 3))]
        elif kind == "$exists":
            ops[kind] = rng.random() < 0.5
        elif kind == "$not":
            ops[kind] = random_condition(rng, field, lists, 0)
        else:
            ops[kind] = random_operand(rng, field, lists)
    return ops


def random_filter(rng: random.Random, fields: list[str], lists: bool = False, depth: int = 3) -> dict[str, Any]:
    """A filter nesting $and, $or, $not and multi-key objects over ``fields``."""
    roll = rng.random() if depth else 0.0
    if roll < 0.4:
        field = rng.choice(fields)
        return {field: random_condition(rng, field, lists)}
    if roll < 0.85:
        key = "$and" if roll < 0.55 else "$or" if roll < 0.7 else "$not"
        subs = [random_filter(rng, fields, lists, depth - 1) for _ in range(rng.randint(1, 3))]
        return {key: subs[0] if key == "$not" else subs}
    return random_filter(rng, fields, lists, depth - 1) | random_filter(rng, fields, lists, depth - 1)


MISSING: Any = object()


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, null, or (via the sentinel) no key at all."""
    return st.one_of(value, st.none(), st.just(MISSING))


def make_doc(fields: dict[str, Any], attributes: Any) -> dict[str, Any]:
    doc = {key: value for key, value in fields.items() if value is not MISSING}
    if attributes is not MISSING:
        doc["attributes"] = attributes
    return doc


# Strategies are built once: building them inside a composite per draw is slow.
documents = st.builds(make_doc, st.fixed_dictionaries({
    "genre": maybe(st.one_of(st.lists(st.sampled_from([*GENRES, None]), max_size=3), st.sampled_from(GENRES))),
    "type": maybe(st.sampled_from(TYPES)),
    "views": maybe(st.one_of(st.integers(-3, 6), st.sampled_from(NUMBERS))),
    "mintDateTime": maybe(st.sampled_from(DATES)),
    "hd": maybe(st.booleans()),
    "title": st.sampled_from(["Arrival", "Heat"]),
}), st.one_of(st.just(MISSING), st.lists(st.one_of(
    st.builds(lambda v: {"key": "runtime", "value": v}, st.sampled_from(RUNTIMES)),
    st.just({"key": "rating", "value": "PG-13"})), max_size=2, unique_by=lambda a: a["key"])))


def operations(docs: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[list[tuple[str, Any]]]:
    """A first batch of records, then further sets (re-sets included) and clears."""
    labels = st.integers(0, 39)
    first = st.tuples(st.just("set"), st.lists(st.tuples(labels, docs), min_size=8, max_size=24))
    rest = st.lists(st.one_of(
        st.tuples(st.just("set"), st.lists(st.tuples(labels, docs), max_size=8)),
        st.tuples(st.just("clear"), st.lists(labels, max_size=6)),
    ), max_size=5)
    return st.builds(lambda a, b: [a, *b], first, rest)


def apply(ops: list[tuple[str, Any]], capacity: int = 0) -> tuple[PayloadIndex, dict[int, dict[str, Any]]]:
    index, model = PayloadIndex(FIELDS, capacity), {}
    for kind, arg in ops:
        if kind == "set":
            index.set([label for label, _ in arg], [doc for _, doc in arg])
            model.update(arg)
        else:
            index.clear(arg)
            for label in arg:
                model.pop(label, None)
    return index, model


def expected_mask(spec: dict[str, Any], model: dict[int, dict[str, Any]], size: int) -> list[bool]:
    predicate = compile_filter(spec)
    return [label in model and predicate(model[label]) for label in range(size)]


# Filters come from a seeded plain-Python generator (many per example, cheaply: drawing
# them through Hypothesis costs more than checking them); the records and the set/clear
# sequence are Hypothesis data, so those shrink on failure.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations(documents), seed=st.integers(0, 2**32 - 1),
       size=st.integers(0, 45), capacity=st.sampled_from([0, 5, 64]))
def test_mask_matches_compile_filter_on_pure_data(
        ops: list[tuple[str, Any]], seed: int, size: int, capacity: int) -> None:
    index, model, rng = *apply(ops, capacity), random.Random(seed)
    for _ in range(40):
        spec = random_filter(rng, list(FIELDS))
        got = index.mask(spec, size)
        assert got is not None, spec
        assert got.dtype == np.bool_ and got.shape == (size,)
        assert got.tolist() == expected_mask(spec, model, size), (spec, model)


IMPURE_VALUES: dict[str, list[Any]] = {
    "genre": [["drama", 3], [["drama"]], {"a": 1}, 7, True, ["drama", {"a": 1}]],
    "type": [1, False, {"a": "video"}],
    "views": ["12", [1, 2], True, {"a": 1}, 2**53 + 1, 10**400],
    "mintDateTime": ["yesterday", 1714564800, ["2024-05-01T12:00:00Z"], "2024-13-01T00:00:00Z"],
    "hd": [1, 0, "true", [True]],
}


def spoil(doc: dict[str, Any], chance: int, spoilt: dict[str, Any]) -> dict[str, Any]:
    if chance == 0:  # rarely, so most fields stay pure and masks are still computed
        return doc | spoilt
    if chance == 1:
        return doc | {"attributes": [{"key": "runtime", "value": 90}, {"key": "runtime", "value": 120}]}
    return doc


impure_documents = st.builds(spoil, documents, st.integers(0, 15), st.one_of([
    st.builds(lambda f, v: {f: v}, st.just(field), st.sampled_from(values))
    for field, values in IMPURE_VALUES.items()]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations(impure_documents), seed=st.integers(0, 2**32 - 1))
def test_mask_on_impure_data_is_exact_or_declines(ops: list[tuple[str, Any]], seed: int) -> None:
    index, model, rng = *apply(ops), random.Random(seed)
    for _ in range(40):
        spec = random_filter(rng, [*FIELDS, "title"], lists=True)
        got = index.mask(spec, 40)
        if got is not None:
            assert got.tolist() == expected_mask(spec, model, 40), (spec, model)


def matches(index: PayloadIndex, spec: dict[str, Any], size: int) -> list[bool]:
    """The mask as a list; the index must not decline."""
    got = index.mask(spec, size)
    assert got is not None, spec
    return [bool(x) for x in got]


def pure_doc(label: int) -> dict[str, Any]:
    return {"genre": [GENRES[label % 4], GENRES[(label + 1) % 4]], "type": TYPES[label % 3], "views": label,
            "mintDateTime": f"2024-05-{label % 28 + 1:02d}T12:00:00Z", "hd": label % 2 == 0,
            "attributes": [{"key": "runtime", "value": 90 + label}]}


@pytest.mark.parametrize("field", sorted(IMPURE_VALUES))
def test_impure_values_make_their_field_decline_but_not_others(field: str) -> None:
    spec_on = {field: {"$exists": True}}
    for value in IMPURE_VALUES[field]:
        index = PayloadIndex(FIELDS)
        index.set(range(10), [pure_doc(i) for i in range(10)])
        assert index.mask(spec_on, 10) is not None
        index.set([3], [{**pure_doc(3), field: value}])
        assert index.mask(spec_on, 10) is None, value
        assert index.mask({"$or": [{"title": "x"}, spec_on]}, 10) is None
        for other in FIELDS.keys() - {field}:
            got = index.mask({other: {"$exists": True}}, 10)
            assert got is not None and got.all(), other
        index.set([3], [pure_doc(3)])
        assert index.mask(spec_on, 10) is not None, "re-setting pure metadata makes the field usable again"


def test_repeated_attribute_makes_the_number_field_decline() -> None:
    index = PayloadIndex(FIELDS)
    index.set([0, 1], [pure_doc(0), {"attributes": [{"key": "runtime", "value": 1}, {"key": "runtime", "value": 2}]}])
    assert index.mask({"attributes.runtime": {"$gte": 2}}, 2) is None
    assert matches(index, {"genre": "drama"}, 2) == [True, False]
    index.clear([1])
    assert matches(index, {"attributes.runtime": {"$gte": 2}}, 2) == [True, False]


def test_undeclared_fields_and_inexact_operands_decline() -> None:
    index = PayloadIndex(FIELDS)
    index.set(range(4), [pure_doc(i) for i in range(4)])
    assert index.mask({"title": "Heat"}, 4) is None
    assert index.mask({"genre": "drama", "owner.name": "ada"}, 4) is None
    assert index.mask({"$not": {"attributes.rating": "PG"}}, 4) is None
    assert index.mask({"genre": ["drama", "comedy"]}, 4) is None  # whole-array equality
    assert index.mask({"genre": {"$in": [["drama", "comedy"]]}}, 4) is None
    assert index.mask({"views": {"$gt": 2**53 + 1}}, 4) is None
    assert index.mask({"views": {"$in": [10**400]}}, 4) is None
    assert matches(index, {"views": [1]}, 4) == [False] * 4


@pytest.mark.parametrize("spec", [
    [], {"views": {"$regex": "x"}}, {"$nor": []}, {"$or": []}, {"$and": {}}, {"genre": {"$in": "drama"}},
    {"views": {"$gt": [1]}}, {"hd": {"$exists": 1}}, {"views": {"$gt": 1, "plain": 2}}, {"": 1}, {"a..b": 1},
    {"views": {"$not": 3}}, {"views": {"$gt": True}}, {"title": {"$lt": None}},
])
def test_malformed_filters_raise_invalid_filter_like_compile_filter(spec: Any) -> None:
    index = PayloadIndex(FIELDS)
    index.set([0], [pure_doc(0)])
    with pytest.raises(InvalidFilter):
        index.mask(spec, 1)


def test_datetime_equality_is_string_equality_but_order_is_by_instant() -> None:
    index = PayloadIndex({"at": "datetime"})
    index.set(range(4), [{"at": "2024-05-01T12:00:00Z"}, {"at": "2024-05-01T13:00:00+01:00"},
                         {"at": "2024-05-01T12:00:00"}, {"at": None}])
    assert matches(index, {"at": "2024-05-01T12:00:00Z"}, 4) == [True, False, False, False]
    between = {"$gte": "2024-05-01T12:00:00Z", "$lte": "2024-05-01T14:00:00+02:00"}
    assert matches(index, {"at": between}, 4) == [True, True, True, False]
    assert matches(index, {"at": {"$gt": "2024-05-01T12"}}, 4) == [False] * 4
    assert matches(index, {"at": {"$gt": "2024"}}, 4) == [True, True, True, False]
    assert matches(index, {"at": None}, 4) == [False, False, False, True]
    assert all(matches(index, {"at": {"$exists": True}}, 4))


def test_bools_never_equal_numbers() -> None:
    index = PayloadIndex({"hd": "bool", "views": "number"})
    index.set(range(3), [{"hd": True, "views": 1}, {"hd": False, "views": 0}, {"hd": None}])
    assert matches(index, {"hd": True}, 3) == [True, False, False]
    assert matches(index, {"hd": 1}, 3) == [False] * 3
    assert matches(index, {"views": True}, 3) == [False] * 3
    assert matches(index, {"hd": {"$ne": True}}, 3) == [False, True, True]
    assert matches(index, {"hd": {"$gte": 0}}, 3) == [False] * 3


def test_parts_round_trip_through_cbor_preserves_masks_and_later_updates() -> None:
    index = PayloadIndex(FIELDS)
    index.set(range(30), [pure_doc(i) for i in range(30)])
    index.set([4, 9], [{**pure_doc(4), "genre": ["crime"]}, {"views": "impure"}])
    index.clear([0, 7])
    restored = PayloadIndex.from_parts(cbor2.loads(cbor2.dumps(index.to_parts())))
    assert restored.fields == FIELDS
    specs = [{"genre": {"$in": ["drama", "crime"]}}, {"genre": {"$gt": "crime"}}, {"type": {"$ne": "video"}},
             {"views": {"$gte": 3}}, {"mintDateTime": {"$lt": "2024-05-10"}},
             {"mintDateTime": "2024-05-03T12:00:00Z"}, {"hd": False}, {"attributes.runtime": {"$exists": False}}, {}]
    for spec in specs:
        for size in (0, 12, 30, 50):
            mine, theirs = index.mask(spec, size), restored.mask(spec, size)
            assert (mine is None) == (theirs is None), spec
            assert mine is None or theirs is None or mine.tolist() == theirs.tolist(), spec
    restored.set([9, 40], [pure_doc(9), pure_doc(40)])
    restored.set([1], [{"genre": "comedy"}])
    model = {i: pure_doc(i) for i in range(41) if i not in (0, 7) and i < 30 or i == 40}
    model |= {4: {**pure_doc(4), "genre": ["crime"]}, 1: {"genre": "comedy"}}
    for spec in specs:
        assert matches(restored, spec, 41) == expected_mask(spec, model, 41), spec


CORRUPTIONS: list[tuple[str, Any]] = [
    ("format", 99), ("high", -1), ("columns", []), ("columns.views.type", "integer"),
    ("columns.views.values", {"dtype": "<f8", "shape": [5], "data": b"\0" * 3}),
    ("columns.views.values", {"dtype": "<i8", "shape": [5], "data": b"\0" * 40}),
    ("columns.views.impure", [99]), ("columns.genre.values", ["drama"] * 4),
    ("columns.mintDateTime.raw", []), ("columns.hd", None), ("live", None),
]


@pytest.mark.parametrize("where,value", CORRUPTIONS)
def test_from_parts_rejects_inconsistent_parts(where: str, value: Any) -> None:
    index = PayloadIndex(FIELDS)
    index.set(range(5), [pure_doc(i) for i in range(5)])
    parts = index.to_parts()
    *path, last = where.split(".")
    target = parts
    for key in path:
        target = target[key]
    target[last] = value
    with pytest.raises(ValueError):
        PayloadIndex.from_parts(parts)


def test_reindexing_many_times_keeps_postings_compact_and_exact() -> None:
    index = PayloadIndex({"genre": "keyword"})
    for round_ in range(400):
        index.set(range(10), [{"genre": [GENRES[(i + round_) % 4], f"g{round_ % 7}"]} for i in range(10)])
    size = index.memory_bytes()
    for round_ in range(400):
        index.set(range(10), [{"genre": [GENRES[(i + round_) % 4], f"g{round_ % 7}"]} for i in range(10)])
        if round_ % 3 == 0:
            index.clear([round_ % 10])
    assert index.memory_bytes() <= 2 * size
    assert sum(matches(index, {"genre": "drama"}, 10)) == 2
    index.clear(range(10))
    assert not any(matches(index, {"genre": {"$nin": []}}, 10))


def test_declaring_an_unknown_type_or_bad_path_is_rejected() -> None:
    assert FIELD_TYPES == ("keyword", "number", "datetime", "bool")
    with pytest.raises(InvalidRecord, match="payload_indexes.views"):
        PayloadIndex({"views": "integer"})
    with pytest.raises(InvalidRecord):
        PayloadIndex({"a..b": "keyword"})


def test_labels_must_be_non_negative_and_pair_with_metadata() -> None:
    index = PayloadIndex(FIELDS)
    with pytest.raises(ValueError):
        index.set([-1], [{}])
    with pytest.raises(ValueError):
        index.set([1, 2], [{}])
    index.set(np.array([5, 5], dtype=np.int32), [{"type": "video"}, {"type": "audio"}])
    assert matches(index, {"type": "audio"}, 6) == [False] * 5 + [True]



@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations(documents), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_take_answers_like_the_source_for_the_chosen_records_re_addressed(
        ops: list[tuple[str, Any]], seed: int, data: st.DataObject) -> None:
    index, model, rng = *apply(ops), random.Random(seed)
    live = sorted(model)
    chosen = data.draw(st.lists(st.sampled_from(live), unique=True)) if live else []
    taken = index.take(np.asarray(chosen, np.int64))
    for _ in range(30):
        spec = random_filter(rng, list(FIELDS))
        got = taken.mask(spec, len(chosen))
        assert got is not None, spec
        assert got.tolist() == [expected_mask(spec, model, 40)[label] for label in chosen], spec
    taken.set([0], [{"genre": "drama"}]) if chosen else None  # the copy stays writable
