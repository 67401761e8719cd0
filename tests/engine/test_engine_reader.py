"""A reader-only engine beside the writer: no lock, nothing on disk touched, same answers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from s5vec.engine import Database, EngineConfig, Executors, Query, ReadOnlyDatabase
from s5vec.index import CollectionConfig, RawItem, prepare_vectors

DIM = 8
CONFIG = EngineConfig(checkpoint_interval_s=3600)


def items(start: int, count: int, timestamp: float | None = None) -> list[RawItem]:
    rng = np.random.default_rng(start)
    return [RawItem(f"r{i}", rng.normal(size=DIM).astype(np.float32), {"i": i}, timestamp)
            for i in range(start, start + count)]


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


async def test_a_reader_opens_a_directory_the_writer_holds_and_answers_what_the_writer_answers(tmp_path: Path) -> None:
    writer = await Database.open(tmp_path, CONFIG)
    try:
        await writer.create_collection(CollectionConfig("c", DIM))
        await writer.upsert("c", items(0, 80, timestamp=1_000_000.0))
        await writer.migrate()  # a sealed segment
        await writer.checkpoint()
        await writer.upsert("c", items(100, 40))  # only in the WAL
        await writer.delete("c", ["r3", "r101"])
        await writer.update_metadata("c", "r5", {"edited": True})
        before = tree(tmp_path)
        reader = await Database.open(tmp_path, CONFIG, read_only=True)
        try:
            assert reader.applied_lsn == writer.applied_lsn
            assert sorted(await reader.ids_after("c")) == sorted(await writer.ids_after("c"))
            assert (await reader.get("c", "r5")).metadata == {"edited": True}
            query = prepare_vectors(writer.collection("c").config, items(7, 1)[0].vector[None, :])[0]
            want, _ = await writer.search("c", query, Query(k=5, ef=100, nprobe=64))
            got, _ = await reader.search("c", query, Query(k=5, ef=100, nprobe=64))
            assert [h.id for h in got] == [h.id for h in want]
            with pytest.raises(ReadOnlyDatabase):
                await reader.upsert("c", items(500, 1))
            with pytest.raises(ReadOnlyDatabase):
                await reader.checkpoint()
            with pytest.raises(ReadOnlyDatabase):
                await reader.migrate()
        finally:
            await reader.close()
        assert tree(tmp_path) == before  # the reader wrote, cut and deleted nothing
        await writer.upsert("c", items(600, 3))  # the writer goes on as before
    finally:
        await writer.close()


async def test_a_reader_stops_at_a_torn_tail_without_cutting_it(tmp_path: Path) -> None:
    writer = await Database.open(tmp_path, CONFIG)
    await writer.create_collection(CollectionConfig("c", DIM))
    await writer.upsert("c", items(0, 10))
    await writer.close(checkpoint=False)
    (segment,) = sorted((tmp_path / "wal").glob("*.wal"))
    with open(segment, "ab") as fh:
        fh.write(b"\x09\x00\x00")  # an unfinished frame, as a writer mid-append leaves it
    size = segment.stat().st_size
    reader = await Database.open(tmp_path, CONFIG, read_only=True)
    try:
        assert sorted(await reader.ids_after("c")) == sorted(f"r{i}" for i in range(10))
    finally:
        await reader.close()
    assert segment.stat().st_size == size


async def test_engines_share_a_callers_executors_and_leave_them_running(tmp_path: Path) -> None:
    executors = Executors.create(search_threads=2)
    try:
        first = await Database.open(tmp_path / "a", CONFIG, executors=executors)
        second = await Database.open(tmp_path / "b", CONFIG, executors=executors)
        await first.create_collection(CollectionConfig("c", DIM))
        await first.close()
        await second.create_collection(CollectionConfig("c", DIM))  # the shared pools still run
        await second.upsert("c", items(0, 5))
        await second.close()
        assert executors.read.submit(lambda: 42).result() == 42
    finally:
        executors.shutdown()
