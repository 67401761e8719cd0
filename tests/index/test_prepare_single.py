"""The one-record fast path of ``prepare_batch`` gives exactly what the batch path gives."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from s5vec.index import CollectionConfig, RawItem
from s5vec.index.records import prepare_batch

CONFIGS = [CollectionConfig("c", 4, "cosine"), CollectionConfig("l", 4, "l2"), CollectionConfig("d", 4, "dot")]
FILLER = RawItem("filler", [1.0, 2.0, 3.0, 4.0], {"f": 1}, 5.0, None)

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([0.0, -0.0, 1e39, -1e39, 3.4e38, 1e-45]))
vectors = st.one_of(st.lists(values, min_size=0, max_size=6), st.lists(st.just(0.0), min_size=4, max_size=4),
                    st.just(["a", 1, 2, 3]), st.none())
items = st.builds(RawItem, st.one_of(st.text(max_size=5), st.integers(), st.none(), st.booleans()), vectors,
                  st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                            st.just([1])), st.one_of(st.none(), st.floats(0, 2e9)), st.just(None))


@settings(max_examples=400, deadline=None)
@given(item=items, config=st.sampled_from(CONFIGS))
def test_single_item_matches_the_batch_path(item: RawItem, config: CollectionConfig) -> None:
    fixed = RawItem(item.id, item.vector, item.metadata, item.timestamp if item.timestamp is not None else 7.0,
                    None)
    single, single_errors = prepare_batch(config, [fixed])
    pair, pair_errors = prepare_batch(config, [FILLER, fixed])
    # the batch path reports the item at position 1 (after the filler, which is always good)
    assert [(e.id, e.code, e.message) for e in single_errors] == [(e.id, e.code, e.message) for e in pair_errors]
    assert [e.index for e in single_errors] == [e.index - 1 for e in pair_errors]
    assert single.ids == pair.ids[1:]
    assert single.metadata == pair.metadata[1:]
    assert single.vectors.dtype == np.float32 and single.vectors.shape == (len(single.ids), 4)
    assert np.array_equal(single.vectors, pair.vectors[1:])
    assert np.array_equal(single.timestamps, pair.timestamps[1:])


def test_single_cosine_vector_is_unit_length_float32() -> None:
    batch, errors = prepare_batch(CONFIGS[0], [RawItem("a", [3.0, 4.0, 0.0, 0.0], None, None, None)])
    assert not errors and batch.ids == ["a"]
    assert batch.vectors.dtype == np.float32 and batch.vectors.flags.c_contiguous
    assert math.isclose(float(np.linalg.norm(batch.vectors[0])), 1.0, rel_tol=1e-6)
    assert batch.vectors[0].tolist() == [np.float32(0.6), np.float32(0.8), 0.0, 0.0]


def test_single_bad_vector_names_the_field() -> None:
    _, errors = prepare_batch(CONFIGS[0], [RawItem("a", [float("nan"), 1.0, 0.0, 0.0], None, None, None)])
    assert [(e.index, e.id, e.code) for e in errors] == [(0, "a", "invalid_request")]
    assert errors[0].message.startswith("vector: contains NaN")
