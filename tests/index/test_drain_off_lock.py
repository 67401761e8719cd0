"""Graph construction runs outside the collection lock (issue 5: a drain held the write lock
for a whole ``add_items`` batch, so every acknowledgement, event and search waited for it).

These tests hold a drain *inside* ``add_items`` and check that writes, deletes, searches and
snapshots behave while it is there, and that the result after it is published is exact."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from s5vec.index import Collection, CollectionConfig, RawItem, prepare_batch, prepare_vectors
from s5vec.index.recent import RecentTier

from test_index_collection import restart, upsert  # rootdir-relative, as tests/storage does


class HeldInsert:
    """Patch ``RecentTier.insert`` so that a drain stops inside it until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        real = RecentTier.insert

        def insert(tier: RecentTier, plan: Any, num_threads: int) -> None:
            real(tier, plan, num_threads)  # really in the graph, not yet published
            self.inside.set()
            assert self.release.wait(30), "test never released the drain"

        monkeypatch.setattr(RecentTier, "insert", insert)


def start_drain(coll: Collection, **kwargs: Any) -> threading.Thread:
    thread = threading.Thread(target=lambda: coll.drain(**kwargs), daemon=True)
    thread.start()
    return thread


def loaded(tmp_path: Path, base: np.ndarray, n: int) -> Collection:
    """A 384-d collection holding rows 0 .. n-1 of ``base`` as ids "0" .. "n-1", all pending."""
    coll = Collection(CollectionConfig("t", 384), tmp_path)
    upsert(coll, [RawItem(i, base[i]) for i in range(n)])
    return coll


def held_drain(coll: Collection, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> tuple[HeldInsert, threading.Thread]:
    """A drain started on a thread and stopped inside its first ``add_items`` chunk."""
    held = HeldInsert(monkeypatch)
    thread = start_drain(coll, **kwargs)
    assert held.inside.wait(30)
    return held, thread


def run_with_timeout(fn: Any, seconds: float = 10.0) -> Any:
    """Run ``fn`` on a thread; fail (instead of hanging) if it blocks behind the drain."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked behind a drain that is inside add_items"
    return result[0]


def query(coll: Collection, vector: np.ndarray) -> np.ndarray:
    return prepare_vectors(coll.config, np.asarray(vector, np.float32)[None])[0]


def test_writes_searches_and_gets_do_not_wait_for_add_items(tmp_path: Path, minilm: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    base = minilm.base
    coll = loaded(tmp_path, base, 600)
    while coll.drain(1000, chunk=1000):
        pass
    upsert(coll, [RawItem(i, base[i]) for i in range(600, 900)])
    held, thread = held_drain(coll, monkeypatch, max_items=300, chunk=300)
    # the 300 vectors are in hnswlib's graph but not published: they must not block anything
    run_with_timeout(lambda: upsert(coll, [RawItem(i, base[i]) for i in range(900, 950)]))
    hits = run_with_timeout(lambda: coll.search(query(coll, base[700]), 10))
    assert hits[0].id == "700"
    assert len({h.id for h in hits}) == len(hits) == 10, "an unpublished label came back twice"
    assert run_with_timeout(lambda: coll.get("905")).id == "905"
    assert coll.stats()["pending"] == 350
    held.release.set()
    thread.join(30)
    assert coll.stats()["pending"] == 50 and coll.stats()["indexed"] == 900


def test_labels_retired_during_add_items_are_deleted_from_the_graph_on_publish(
        tmp_path: Path, minilm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    base = minilm.base
    coll = loaded(tmp_path, base, 400)
    held, thread = held_drain(coll, monkeypatch, max_items=400, chunk=400)
    run_with_timeout(lambda: coll.apply_delete([str(i) for i in range(0, 400, 2)]))  # half of them
    run_with_timeout(lambda: upsert(coll, [RawItem(1, base[4000])]))  # an overwrite of an inserted label
    held.release.set()
    thread.join(30)
    stats = coll.stats()
    assert stats["indexed"] == 199 and stats["pending"] == 1  # the new "1" waits for the next drain
    assert coll.recent.hnsw_live == len(coll.recent.graph_live_labels()) == 199
    for i in range(0, 400, 2):  # a deleted record is never found, by its own vector or otherwise
        ids = [h.id for h in coll.search(query(coll, base[i]), 10)]
        assert str(i) not in ids
        assert len(set(ids)) == len(ids) == 10
    assert coll.search(query(coll, base[4000]), 1)[0].id == "1"
    assert coll.search(query(coll, base[1]), 1)[0].id != "1"  # its old vector went with the overwrite
    # and the graph agrees once the overwrite is drained too: every live record finds itself
    while coll.drain():
        pass
    for i in range(3, 400, 2):
        assert coll.search(query(coll, base[i]), 1)[0].id == str(i)


def test_snapshot_waits_for_the_drain_and_restores_exactly(tmp_path: Path, minilm: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    base = minilm.base
    coll = loaded(tmp_path, base, 300)
    held, thread = held_drain(coll, monkeypatch, max_items=300, chunk=100)
    snaps: list[Any] = []
    settled = threading.Event()  # the snapshot went in, or found the drain's mutex taken
    mutex = coll._drain_mutex

    class Watched:  # the mutex as the snapshot sees it (the drain holds the real one already)
        def __enter__(self) -> None:
            if not mutex.acquire(blocking=False):
                settled.set()
                mutex.acquire()

        def __exit__(self, *exc: object) -> None:
            mutex.release()

    monkeypatch.setattr(coll, "_drain_mutex", Watched())
    snapper = threading.Thread(target=lambda: (snaps.append(coll.snapshot()), settled.set()), daemon=True)
    snapper.start()
    assert settled.wait(30)
    assert snaps == [], "a snapshot must not save a graph holding unpublished labels"
    held.release.set()  # every chunk now goes straight through
    thread.join(30)
    snapper.join(30)
    assert snaps[0].recent["hnsw_upto"] == 300
    monkeypatch.undo()
    again = restart(coll, tmp_path)
    assert again.stats()["indexed"] == 300 and again.stats()["pending"] == 0
    assert all(again.search(query(again, base[i]), 1)[0].id == str(i) for i in range(0, 300, 7))


def test_compaction_during_a_drain_loses_nothing(tmp_path: Path, minilm: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base = minilm.base
    coll = loaded(tmp_path, base, 200)
    while coll.drain():
        pass
    upsert(coll, [RawItem(i, base[i + 200]) for i in range(200)])  # overwrite all: 200 tombstones
    held, thread = held_drain(coll, monkeypatch, max_items=200, chunk=50)
    monkeypatch.undo()  # the compaction's own private drain runs normally
    assert run_with_timeout(lambda: coll.compact(min_ratio=0.1), 60)
    held.release.set()
    thread.join(30)
    while coll.drain():
        pass
    assert len(coll) == 200 and coll.stats()["indexed"] == 200
    for i in range(0, 200, 3):
        assert coll.search(query(coll, base[i + 200]), 1)[0].id == str(i)


def test_concurrent_writers_drains_and_searches_stay_exact(tmp_path: Path, minilm: Any) -> None:
    """Stress: overwrites, deletes, searches and drains on four threads; afterwards every
    live record is found by its own vector, no deleted one is, and the graph's live count
    matches the live labels it holds."""
    coll = Collection(CollectionConfig("t", 384, ef_construction=64), tmp_path)
    base = minilm.base
    ids = 400
    upsert(coll, [RawItem(i, base[i]) for i in range(ids)])
    current = {i: i for i in range(ids)}
    deleted: set[int] = set()
    stop = threading.Event()
    errors: list[BaseException] = []

    def guard(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
                stop.set()
        return run

    def writer() -> None:
        rng = np.random.default_rng(1)
        fresh_rows = iter(range(ids, len(base)))  # a vector never used twice
        for _ in range(300):
            rid = int(rng.integers(ids))
            if rng.random() < 0.2:
                coll.apply_delete([str(rid)])
                deleted.add(rid)
            else:
                row = next(fresh_rows)
                batch, errs = prepare_batch(coll.config, [RawItem(rid, base[row])])
                assert not errs
                coll.apply_upsert(batch)
                current[rid] = row
                deleted.discard(rid)
        stop.set()

    def drainer() -> None:
        while not stop.is_set():
            coll.drain(64, 2, chunk=8)

    def searcher() -> None:
        rng = np.random.default_rng(2)
        while not stop.is_set():
            hits = coll.search(query(coll, base[int(rng.integers(len(base)))]), 10)
            names = [h.id for h in hits]
            assert len(set(names)) == len(names), f"duplicate ids in {names}"

    threads = [threading.Thread(target=guard(fn)) for fn in (writer, drainer, searcher, searcher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    while coll.drain():
        pass
    r = coll.recent
    assert r.hnsw_live == len(r.graph_live_labels())
    for rid, row in current.items():
        top = [h.id for h in coll.search(query(coll, base[row]), 3)]
        if rid in deleted:
            assert str(rid) not in top
        else:
            assert str(rid) in top
