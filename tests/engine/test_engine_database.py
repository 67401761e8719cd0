"""The engine: group commit, WAL replay, checkpoints, garbage collection, corruption."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from s5vec.index import CollectionConfig, CollectionNotFound, RawItem, prepare_vectors
from s5vec.engine import Database, DataDirLocked, EngineConfig, Query
from s5vec.engine.database import _split
from s5vec.storage import BlobCorrupt, BlobId

DIM = 16
CONFIG = EngineConfig(checkpoint_interval_s=3600)


def items(start: int, count: int, seed: int = 0) -> list[RawItem]:
    rng = np.random.default_rng(seed + start)
    return [RawItem(f"r{i}", rng.normal(size=DIM).astype(np.float32), {"i": i}) for i in range(start, start + count)]


async def test_concurrent_writers_are_group_committed_and_all_applied(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, CONFIG)
    await db.create_collection(CollectionConfig("c", DIM))
    await asyncio.gather(*(db.upsert("c", items(i * 10, 10)) for i in range(50)))
    assert len(db.collection("c")) == 500
    assert db.applied_lsn == 51  # one WAL record per request...
    assert db.wal_syncs < 25  # ...but far fewer fsyncs: concurrent requests share one
    await db.close(checkpoint=False)
    reopened = await Database.open(tmp_path, CONFIG)
    assert len(reopened.collection("c")) == 500
    assert reopened.collection("c").get("r123").metadata == {"i": 123}
    await reopened.close()


async def test_replay_stops_at_a_torn_tail_and_keeps_everything_before(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, CONFIG)
    await db.create_collection(CollectionConfig("c", DIM))
    for start in range(0, 40, 10):
        await db.upsert("c", items(start, 10))
    await db.close(checkpoint=False)
    segment = sorted((tmp_path / "wal").glob("*.wal"))[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # the last batch is torn
    db = await Database.open(tmp_path, CONFIG)
    assert len(db.collection("c")) == 30
    await db.upsert("c", items(100, 5))  # new appends follow the last good record
    await db.close(checkpoint=False)
    db = await Database.open(tmp_path, CONFIG)
    assert len(db.collection("c")) == 35
    await db.close()


async def test_checkpoint_trims_the_wal_and_collects_unreferenced_blobs(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, EngineConfig(checkpoint_interval_s=3600, keep_manifests=1))
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 200))
    await db.wait_indexed()
    first = await db.checkpoint()
    assert db.wal_bytes == 0
    await db.upsert("c", items(200, 50))
    await db.delete("c", ["r1", "r2"])
    second = await db.checkpoint()
    assert first != second and db.root == second
    stored = set(await db.store.list())
    assert first not in stored and second in stored
    await db.close(checkpoint=False)
    db = await Database.open(tmp_path, CONFIG)
    coll = db.collection("c")
    assert len(coll) == 248 and not coll.contains("r1")
    query = coll.get("r7").vector
    hits, partial = await db.search("c", query, Query(k=1))
    assert hits[0].id == "r7" and not partial
    await db.close()


async def test_a_corrupt_blob_is_refused_at_open_not_silently_used(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, CONFIG)
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 50))
    root = await db.checkpoint()
    await db.close(checkpoint=False)
    assert isinstance(root, BlobId)
    victim = max((p for p in (tmp_path / "blobs").glob("*/*")), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupt, match="does not match its content address"):
        await Database.open(tmp_path, CONFIG)
    victim.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(BlobCorrupt):
        await Database.open(tmp_path, CONFIG)


async def test_only_one_process_may_open_a_data_directory(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, CONFIG)
    with pytest.raises(DataDirLocked):
        await Database.open(tmp_path, CONFIG)
    await db.close()
    again = await Database.open(tmp_path, CONFIG)
    await again.close()


async def test_searches_during_ingest_see_only_whole_records(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, EngineConfig(checkpoint_interval_s=3600, drain_batch=64))
    await db.create_collection(CollectionConfig("c", DIM))
    rng = np.random.default_rng(3)

    done = asyncio.Event()

    async def searcher() -> int:
        seen, rounds = 0, 0
        while not done.is_set() or rounds < 20:
            rounds += 1
            query = prepare_vectors(db.collection("c").config, rng.normal(size=(1, DIM)).astype(np.float32))[0]
            hits, _ = await db.search("c", query, Query(k=10))
            ids = [h.id for h in hits]
            assert len(ids) == len(set(ids))
            for hit in hits:
                assert hit.metadata == {"i": int(hit.id[1:])}
            seen = max(seen, len(hits))
            await asyncio.sleep(0)
        return seen

    async def ingest() -> None:
        for start in range(0, 2000, 100):
            await db.upsert("c", items(start, 100))
        done.set()

    seen, _ = await asyncio.gather(searcher(), ingest())
    assert seen == 10
    await db.wait_indexed()
    assert db.collection("c").stats()["indexed"] == 2000
    await db.close()


async def test_writes_to_a_dropped_collection_fail_cleanly(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, CONFIG)
    await db.create_collection(CollectionConfig("c", DIM))
    await db.drop_collection("c")
    with pytest.raises(CollectionNotFound):
        await db.upsert("c", items(0, 1))
    await db.close(checkpoint=False)
    db = await Database.open(tmp_path, CONFIG)
    assert "c" not in db.collections
    await db.close()


async def test_graph_building_runs_at_lower_cpu_priority_and_lingers_for_a_batch(tmp_path: Path) -> None:
    import os
    import threading

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    db = await Database.open(tmp_path, EngineConfig(checkpoint_interval_s=3600, background_nice=7,
                                                    index_linger_s=1.0))
    await db.create_collection(CollectionConfig("c", DIM))
    base = niceness()
    assert await asyncio.wrap_future(db._index_pool.submit(niceness)) == min(19, base + 7)
    assert await asyncio.wrap_future(db._migrate_pool.submit(niceness)) == min(19, base + 7)
    assert await asyncio.wrap_future(db._writer_pool.submit(niceness)) == base  # acknowledgements are not
    coll = db.collection("c")
    for i in range(5):  # a trickle of single writes...
        await db.upsert("c", items(i, 1))
    assert coll.pending == 5  # ...waits in the exact buffer (searchable) rather than one graph call each
    hits, _ = await db.search("c", prepare_vectors(coll.config, items(3, 1)[0].vector[None])[0], Query(k=1))
    assert hits[0].id == "r3"
    await db.wait_indexed(10)
    assert coll.pending == 0
    await db.close()


async def test_the_indexer_inserts_in_graph_chunks_of_the_configured_size(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from s5vec.index.recent import RecentTier

    sizes: list[int] = []
    real = RecentTier.insert

    def insert(tier: RecentTier, plan: object, num_threads: int) -> None:
        sizes.append(len(plan.fresh))  # type: ignore[attr-defined]
        real(tier, plan, num_threads)  # type: ignore[arg-type]

    monkeypatch.setattr(RecentTier, "insert", insert)
    db = await Database.open(tmp_path, EngineConfig(checkpoint_interval_s=3600, graph_chunk=5, index_linger_s=0,
                                                    index_threads=1))
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 23))
    await db.wait_indexed(10)
    assert sizes == [5, 5, 5, 5, 3]  # each chunk published before the next
    await db.close()
    sizes.clear()
    # hnswlib runs a call of <= 4 x threads rows on one thread: with 2 threads, 9 at least
    db = await Database.open(tmp_path, EngineConfig(checkpoint_interval_s=3600, graph_chunk=5, index_linger_s=0,
                                                    index_threads=2))
    await db.create_collection(CollectionConfig("d", DIM))
    await db.upsert("d", items(0, 23))
    await db.wait_indexed(10)
    assert sizes == [9, 9, 5]
    assert db.collection("c").stats()["indexed"] == 23 and db.collection("d").stats()["indexed"] == 23
    await db.close()


async def test_concurrent_searches_are_spread_over_the_free_batch_slots(tmp_path: Path) -> None:
    # Eight searches queued at once used to become one batch on one thread while the
    # other slot idled; now they are split over the search_batches slots (default 2).
    db = await Database.open(tmp_path, CONFIG)
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 300))
    await db.wait_indexed()
    coll = db.collection("c")
    batches: list[tuple[int, str]] = []
    search_batch = coll.search_batch

    def recorded(queries: np.ndarray, *args: object, **kwargs: object) -> object:
        batches.append((len(queries), threading.current_thread().name))
        return search_batch(queries, *args, **kwargs)

    coll.search_batch = recorded  # type: ignore[method-assign]
    queries = prepare_vectors(coll.config, np.random.default_rng(4).normal(size=(8, DIM)).astype(np.float32))
    query = Query(k=5, include_metadata=False)
    results = await asyncio.gather(*(db.search("c", q, query) for q in queries))
    assert sorted(size for size, _ in batches) == [4, 4]
    for q, (hits, partial) in zip(queries, results):
        assert not partial
        assert [h.id for h in hits] == [h.id for h in search_batch(q[None], 5, include_metadata=False)[0]]
    await db.close(checkpoint=False)


def test_split_keeps_order_and_sizes_within_one() -> None:
    assert _split(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert _split([1, 2], 5) == [[1], [2]] and _split([1, 2, 3], 1) == [[1, 2, 3]] and _split([9], 0) == [[9]]


async def test_the_indexer_gives_freed_memory_back_once_a_burst_is_indexed(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import s5vec.engine.indexer as database_module

    trims: list[int] = []
    monkeypatch.setattr(database_module, "release_free_memory", lambda: trims.append(1) or True)
    monkeypatch.setattr(database_module, "TRIM_AFTER_INDEXED", 300)
    db = await Database.open(tmp_path, CONFIG)
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 200))
    await db.index_round()  # drained, and the trim (had one been due) done
    assert trims == []  # 200 indexed: below the threshold
    await db.upsert("c", items(200, 200))
    await db.index_round()
    assert trims == [1]  # 400 indexed since start: one trim, and the count starts again
    await db.upsert("c", items(400, 100))
    await db.index_round()
    assert trims == [1] and db.collection("c").stats()["indexed"] == 500
    await db.close(checkpoint=False)


async def test_only_one_process_may_open_a_data_directory_even_after_a_lock_file_is_deleted(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, CONFIG)
    try:
        for stray in tmp_path.iterdir():  # whatever an operator may delete: no file holds the lock
            if stray.is_file():
                stray.unlink()
        with pytest.raises(DataDirLocked):
            await Database.open(tmp_path, CONFIG)
    finally:
        await db.close()


async def test_dropping_a_collection_keeps_the_segment_files_of_one_whose_name_extends_it(tmp_path: Path) -> None:
    old = 1_000_000.0  # long before the recent tier's age threshold
    db = await Database.open(tmp_path, EngineConfig(checkpoint_interval_s=3600, migrate_interval_s=3600))
    try:
        for name in ("a", "a-1", "a-10"):
            await db.create_collection(CollectionConfig(name, DIM))
            await db.upsert(name, [RawItem(i.id, i.vector, i.metadata, old) for i in items(0, 60)])
        await db.migrate()
        files = {name: sorted(p for p in (tmp_path / "segments").rglob("*.f32") if name in p.parts)
                 for name in ("a", "a-1", "a-10")}
        assert all(files.values()), files
        await db.drop_collection("a")
        assert not any(p.exists() for p in files["a"])
        assert all(p.exists() for p in files["a-1"] + files["a-10"])
        query = items(0, 60)[5].vector
        for name in ("a-1", "a-10"):
            hits, _ = await db.search(name, prepare_vectors(db.collection(name).config, query[None, :])[0],
                                      Query(k=1, recent=False))
            assert [h.id for h in hits] == ["r5"]
    finally:
        await db.close()


async def test_a_listing_of_collections_is_not_changed_by_creates_and_drops_after_it(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, CONFIG)
    try:
        for name in "abc":
            await db.create_collection(CollectionConfig(name, DIM))
        snapshot = db.collection_items()
        listing = iter(db.collections.values())  # a reader on the loop, half-way through
        assert next(listing).config.name == "a"
        await db.drop_collection("b")  # applied by the writer thread
        await db.create_collection(CollectionConfig("d", DIM))
        await db.create_collection(CollectionConfig("e", DIM))
        assert [c.config.name for c in listing] == ["b", "c"]
        assert [name for name, _ in snapshot] == ["a", "b", "c"]
        assert [name for name, _ in db.collection_items()] == ["a", "c", "d", "e"]
    finally:
        await db.close()


def test_a_lazy_segment_reached_from_the_event_loop_thread_fails_loudly_instead_of_deadlocking(
        tmp_path: Path) -> None:
    old = 1_000_000.0  # long before the recent tier's age threshold: migrate seals it
    config = EngineConfig(checkpoint_interval_s=3600, migrate_interval_s=3600)
    vector = items(0, 60)[5].vector

    async def prepare() -> None:
        db = await Database.open(tmp_path, config)
        await db.create_collection(CollectionConfig("c", DIM))
        await db.upsert("c", [RawItem(i.id, i.vector, i.metadata, old) for i in items(0, 60)])
        await db.migrate()
        await db.close()  # checkpoints: the sealed segment's blobs are in the store

    outcome: dict[str, object] = {}

    async def reach_from_the_loop() -> None:
        db = await Database.open(tmp_path, config)  # lazy_segments: the segment is fetched on first use
        try:
            coll = db.collection("c")
            assert coll.stats()["segments_loaded"] == 0
            try:
                coll.get("r5", include_vector=True)  # on the loop thread: the loader must not wait for the loop
            except RuntimeError as exc:
                outcome["error"] = str(exc)
            hit = await db.get("c", "r5")  # from a worker thread the same load works
            outcome["vector"] = hit.vector
        finally:
            await db.close(checkpoint=False)

    asyncio.run(prepare())
    thread = threading.Thread(target=asyncio.run, args=(reach_from_the_loop(),), daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "loading a lazy segment on the event loop thread deadlocked"
    assert "event loop thread" in str(outcome.get("error")), outcome
    assert np.allclose(outcome["vector"], prepare_vectors(CollectionConfig("c", DIM), vector[None, :])[0])
