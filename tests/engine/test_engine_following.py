"""Followers on the S5 portal double: loaded from the root and the shipped WAL, kept current
by tailing it across checkpoints, same LSNs and event ids as the writer, no writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from s5vec.engine import Database, EngineConfig, EventBus, Query, ReadOnlyDatabase
from s5vec.engine.config import ReplicationConfig
from s5vec.engine.following import Follower
from s5vec.index import CollectionConfig, RawItem
from s5vec.storage import RootMirror
from s5vec.storage.portal import PortalBlobStore
from s5vec.storage.s5.seed import Identity, generate_phrase
from s5vec.testing.portal import create_test_portal

DIM = 8
CONFIG = EngineConfig(checkpoint_interval_s=3600, storage_probe_s=3600)
FAST = {"backoff": 0.001, "max_backoff": 0.01, "timeout": 5.0, "connect_timeout": 1.0, "retries": 0}
SHIP = ReplicationConfig(ship_interval_ms=20)
FOLLOW = ReplicationConfig(role="follower", poll_interval_ms=20)


@pytest.fixture
def identity() -> Identity:
    return Identity.from_phrase(generate_phrase())


@pytest.fixture
async def portal(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(create_test_portal())
    return server


@asynccontextmanager
async def portal_store(server: TestServer, identity: Identity, data_dir: Path) -> AsyncIterator[RootMirror]:
    remote = PortalBlobStore(str(server.make_url("/")), identity, cache_dir=data_dir / "s5-cache",
                             **FAST)  # type: ignore[arg-type]
    data_dir.mkdir(parents=True, exist_ok=True)
    async with RootMirror(remote, data_dir / "ROOT") as store:
        yield store


@asynccontextmanager
async def writer(server: TestServer, identity: Identity, data_dir: Path) -> AsyncIterator[Database]:
    async with portal_store(server, identity, data_dir) as store:
        db = await Database.open(data_dir, CONFIG, store, storage_mode="portal", replication=SHIP)
        try:
            yield db
        finally:
            await db.close(checkpoint=False)


@asynccontextmanager
async def follower(server: TestServer, identity: Identity, data_dir: Path) -> AsyncIterator[Follower]:
    async with portal_store(server, identity, data_dir) as store:
        f = await Follower.open(data_dir, CONFIG, store, FOLLOW, events=EventBus(), storage_mode="portal")
        try:
            yield f
        finally:
            await f.close()


def items(start: int, count: int) -> list[RawItem]:
    rng = np.random.default_rng(start)
    return [RawItem(f"r{i}", rng.normal(size=DIM).astype(np.float32), {"i": i}) for i in range(start, start + count)]


async def shipped(db: Database) -> None:
    assert db._shipper is not None
    async with asyncio.timeout(5):
        while db._shipper.shipped_lsn < db.applied_lsn:
            await asyncio.sleep(0.01)


def event_ids(bus: EventBus, after_lsn: int) -> list[str]:
    ids = []
    for seq in range(bus.first_seq, bus.seq + 1):
        change = bus.change_at(seq)
        if change is not None and change.lsn > after_lsn:
            ids.append(change.event_id)
    return ids


async def test_a_follower_loads_root_and_shipped_wal_and_tails_new_writes_with_the_writers_event_ids(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with writer(portal, identity, tmp_path / "w") as w:
        await w.create_collection(CollectionConfig("c", DIM))
        await w.upsert("c", items(0, 50))
        await w.checkpoint()
        await w.upsert("c", items(50, 50))  # after the checkpoint: only in shipped chunks
        await shipped(w)
        async with follower(portal, identity, tmp_path / "f") as f:
            assert f.db.applied_lsn == w.applied_lsn and len(f.db.collection("c")) == 100
            start = f.db.applied_lsn
            await w.upsert("c", items(100, 10))
            await w.delete("c", ["r3", "r60"])
            await w.update_metadata("c", "r5", {"i": -5})
            await shipped(w)
            assert await f.poll() == 3
            coll = f.db.collection("c")
            assert len(coll) == 108 and not coll.contains("r60") and coll.get("r5").metadata == {"i": -5}
            hits, _ = await f.db.search("c", items(100, 10)[4].vector, Query(k=1))
            assert hits[0].id == "r104"
            assert f.lag_lsn == 0 and f.stats()["applied_lsn"] == w.applied_lsn
            assert event_ids(f.db.events, start) == event_ids(w.events, start) != []
            with pytest.raises(ReadOnlyDatabase):
                await f.db.upsert("c", items(500, 1))


async def test_a_follower_keeps_up_across_checkpoints_that_fold_the_chain(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with writer(portal, identity, tmp_path / "w") as w:
        w.keep_unreferenced_for(60)  # as the daemon does (jobs.gc_grace_s): folded chunks stay a while
        await w.create_collection(CollectionConfig("c", DIM))
        async with follower(portal, identity, tmp_path / "f") as f:
            task = asyncio.create_task(f.run())
            try:
                for round_ in range(4):
                    await w.upsert("c", items(round_ * 10, 10))
                    if round_ % 2:
                        await w.checkpoint()
                    await w.upsert("c", items(100 + round_, 1))
                    await shipped(w)
                    assert await f.db.wait_for_lsn(w.applied_lsn, 5)
                assert len(f.db.collection("c")) == 44 and f.stale is None
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def test_a_follower_stopped_across_a_checkpoint_and_garbage_collection_restarts_from_the_new_root(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with writer(portal, identity, tmp_path / "w") as w:
        await w.create_collection(CollectionConfig("c", DIM))
        await w.upsert("c", items(0, 10))
        await shipped(w)
        async with follower(portal, identity, tmp_path / "f") as f:
            assert len(f.db.collection("c")) == 10
        await w.upsert("c", items(10, 10))
        await w.checkpoint()
        await w.upsert("c", items(20, 10))
        await shipped(w)
        await w.collect_garbage()  # grace 0: the folded chunks are gone
        async with follower(portal, identity, tmp_path / "f") as f:
            assert len(f.db.collection("c")) == 30 and f.db.applied_lsn == w.applied_lsn


async def test_wait_for_lsn_gives_up_after_its_timeout(portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with writer(portal, identity, tmp_path / "w") as w:
        await w.create_collection(CollectionConfig("c", DIM))
        await shipped(w)
        async with follower(portal, identity, tmp_path / "f") as f:
            assert await f.db.wait_for_lsn(w.applied_lsn, 0.01)
            assert not await f.db.wait_for_lsn(w.applied_lsn + 1, 0.05)


async def test_a_follower_that_missed_every_head_between_two_checkpoints_finds_the_folded_chunk(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with writer(portal, identity, tmp_path / "w") as w:
        w.keep_unreferenced_for(60)
        await w.create_collection(CollectionConfig("c", DIM))
        await shipped(w)
        async with follower(portal, identity, tmp_path / "f") as f:  # polled only by hand below
            await w.upsert("c", items(0, 3))
            await shipped(w)  # a head names this chunk; the follower does not look
            await w.checkpoint()  # ... and this checkpoint folds it
            await w.upsert("c", items(3, 2))
            await shipped(w)
            assert await f.poll() == 2 and f.stale is None
            assert len(f.db.collection("c")) == 5 and f.db.applied_lsn == w.applied_lsn
