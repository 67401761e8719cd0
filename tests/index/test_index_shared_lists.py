"""The merged lists of shared-codebook segments hold exactly what one index filled with
all their rows holds: same labels, same approximate scores, for list sizes that are and
are not whole SIMD blocks (faiss's own merge_from overruns its buffer on some of them)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
from s5vec.index.ivf import Codebook, Coarse, IvfParams, IvfSegment, SharedLists


@pytest.mark.parametrize(("nlist", "sizes"), [(4, (3000, 4000, 5000)), (4, (777, 5, 4096)), (1, (1280, 1280, 1280, 7)), (1, (32 * 41, 1, 4096))])
def test_merged_lists_equal_one_index_of_every_row(tmp_path: Path, nlist: int, sizes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(sizes))
    rows = rng.standard_normal((sum(sizes), 16), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    train = rng.standard_normal((2000, 16), dtype=np.float32)
    codebook = Codebook.train(train / np.linalg.norm(train, axis=1, keepdims=True), "cosine",
                              IvfParams(quantizer="pq4", nlist=nlist))
    bounds = np.cumsum((0, *sizes))
    segments = tuple(IvfSegment.build(rows[a:b], codebook, tmp_path / f"{i}.f32")
                     for i, (a, b) in enumerate(zip(bounds, bounds[1:])))
    coarse = Coarse(codebook)
    view = SharedLists(coarse, segments)
    assert list(view.bases) == np.cumsum((0, *[(s + 7) // 8 * 8 for s in sizes]))[:-1].tolist()  # 8-aligned

    one = codebook.empty_index()
    one.add(rows)
    queries = rows[:40] + np.float32(0.05)
    list_dist, lists = coarse.assign(queries, nlist)
    every = len(rows)  # every row of every list: no ties at a cut-off to differ on
    scores, labels = view.scan(queries, every, lists, list_dist)
    slot, position = view.locate(labels)
    found = bounds[slot] + position
    faiss.extract_index_ivf(one).nprobe = nlist
    want_scores, want = one.search(queries, every)
    for row in range(len(queries)):
        assert sorted(found[row].tolist()) == list(range(every))
        mine = dict(zip(found[row].tolist(), scores[row].tolist()))
        assert all(abs(mine[label] - score) < 1e-6 for label, score in zip(want[row].tolist(), want_scores[row].tolist()))

    # a bitmap over every label: only odd rows of the largest segment, none of the others
    big = int(np.argmax(sizes))
    parts: list[np.ndarray | None] = [np.zeros(0, np.uint8)] * len(segments)
    odd = np.zeros(sizes[big], bool)
    odd[1::2] = True
    parts[big] = np.packbits(odd, bitorder="little")
    _, picked = view.scan(queries, 50, lists, list_dist, view.bitmap(parts))
    slot, position = view.locate(picked)
    kept = picked >= 0
    assert kept.all() and (slot == big).all() and (position % 2 == 1).all()
