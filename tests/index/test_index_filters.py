"""Mongo-style metadata filters."""

from __future__ import annotations

from typing import Any

import pytest
from s5vec.index import InvalidFilter, compile_filter

DOC = {
    "title": "Arrival", "genre": ["sci-fi", "drama"], "views": 1200, "type": "video", "hd": True,
    "mintDateTime": "2024-05-01T12:00:00Z", "owner": {"name": "ada", "tags": ["x"]},
    "attributes": [{"key": "runtime", "value": 116}, {"key": "rating", "value": "PG-13"}],
}


@pytest.mark.parametrize("spec,expected", [
    ({"genre": "drama"}, True),
    ({"genre": "comedy"}, False),
    ({"genre": {"$in": ["comedy", "sci-fi"]}}, True),
    ({"genre": {"$nin": ["comedy", "sci-fi"]}}, False),
    ({"views": {"$gt": 1000, "$lte": 1200}}, True),
    ({"views": {"$lt": 1000}}, False),
    ({"views": {"$ne": 5}}, True),
    ({"title": {"$eq": "Arrival"}}, True),
    ({"missing": {"$exists": False}}, True),
    ({"views": {"$exists": False}}, False),
    ({"missing": {"$ne": 1}}, True),
    ({"owner.name": "ada"}, True),
    ({"owner.tags": "x"}, True),
    ({"attributes.runtime": {"$gte": 100}}, True),
    ({"attributes.rating": "PG-13"}, True),
    ({"attributes.runtime": {"$lt": 100}}, False),
    ({"mintDateTime": {"$gte": "2024-01-01T00:00:00+00:00", "$lt": "2024-06-01"}}, True),
    ({"mintDateTime": {"$gte": "2024-05-01T13:00:00+01:00"}}, True),
    ({"mintDateTime": {"$gt": "2024-05-01T13:00:00+01:00"}}, False),
    ({"mintDateTime": {"$lt": "2023-12-31T23:59:59Z"}}, False),
    ({"$or": [{"views": {"$lt": 10}}, {"type": "video"}]}, True),
    ({"$and": [{"views": {"$gt": 10}}, {"type": "audio"}]}, False),
    ({"$not": {"type": "audio"}}, True),
    ({"views": {"$not": {"$gt": 2000}}}, True),
    ({"hd": True}, True),
    ({"hd": 1}, False),
    ({"views": {"$gt": "100"}}, False),
    ({"type": "video", "views": {"$gte": 1200}}, True),
])
def test_filter_matches_like_mongodb(spec: dict[str, Any], expected: bool) -> None:
    assert compile_filter(spec)(DOC) is expected


@pytest.mark.parametrize("spec", [
    [], {"views": {"$regex": "x"}}, {"$nor": []}, {"$or": []}, {"$and": {}},
    {"genre": {"$in": "drama"}}, {"views": {"$gt": [1]}}, {"x": {"$exists": 1}},
    {"x": {"$gt": 1, "plain": 2}}, {"": 1}, {"a..b": 1}, {"x": {"$not": 3}},
])
def test_malformed_filters_raise_invalid_filter(spec: Any) -> None:
    with pytest.raises(InvalidFilter):
        compile_filter(spec)


def test_in_and_nin_agree_with_one_eq_per_value_for_every_kind_of_value() -> None:
    """``$in`` looks scalars up in a set: it must keep ``$eq``'s rules (booleans equal only
    booleans, 1 == 1.0, None, arrays by value, array fields match by element)."""
    values: list[Any] = [1, 1.0, 2.5, True, False, 0, None, "1", "a", [1, 2], {"k": 1}, float("nan")]
    docs = [{"x": v} for v in values] + [{"x": [1, "a"]}, {"x": [[1, 2]]}, {}, {"x": [True]}]
    for arg in ([1], [True], [0], [1.0, "a"], [None], [[1, 2]], [{"k": 1}], [False, "1"], values):
        ors = compile_filter({"$or": [{"x": {"$eq": a}} for a in arg]})
        inside, outside = compile_filter({"x": {"$in": arg}}), compile_filter({"x": {"$nin": arg}})
        for doc in docs:
            assert inside(doc) is ors(doc), (arg, doc)
            assert outside(doc) is (not ors(doc)), (arg, doc)


def test_a_filter_over_its_limits_is_refused_before_it_is_compiled() -> None:
    from s5vec.index import FilterLimits

    tree: dict[str, Any] = {"g": 1}
    for _ in range(20):  # a million leaves, but one object shared: only the walk could notice
        tree = {"$or": [tree, tree]}
    with pytest.raises(InvalidFilter, match="engine.filter_max_nodes = 1000"):
        compile_filter(tree)
    with pytest.raises(InvalidFilter, match="engine.filter_max_in_values = 5"):
        compile_filter({"$or": [{"a": {"$in": [1, 2, 3]}}, {"b": {"$nin": [4, 5, 6]}}]}, FilterLimits(100, 5))
    assert compile_filter({"$or": [{"a": {"$in": [1, 2]}}, {"b": {"$nin": [4, 5, 6]}}]}, FilterLimits(100, 5))({"a": 2})
    small = {"$or": [{"a": {"$in": list(range(20))}}]}
    assert compile_filter(small, None)({"a": 19})  # unchecked: only for filters checked where they came in


def test_not_nested_deeply_on_a_field_is_invalid_instead_of_overflowing_the_stack() -> None:
    condition: dict[str, Any] = {"$eq": 1}
    for _ in range(400):  # 401 nodes: within max_nodes, but 400 levels of recursion
        condition = {"$not": condition}
    with pytest.raises(InvalidFilter, match="levels deep"):
        compile_filter({"a": condition})
    shallow: dict[str, Any] = {"$eq": 1}
    for _ in range(4):
        shallow = {"$not": shallow}
    assert compile_filter({"a": shallow})({"a": 1})
