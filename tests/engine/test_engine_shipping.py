"""WAL shipping on the S5 portal double: a new node with only the phrase recovers every
shipped write, checkpoints fold the chain and garbage collection keeps what it needs,
replicated durability acknowledges only once the chunk is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from s5vec.engine import Database, EngineConfig
from s5vec.engine.config import ReplicationConfig
from s5vec.engine.errors import NotWriter
from s5vec.engine.shipping import NotReplicated, decode_chunk, encode_chunk, read_head, shipped_records
from s5vec.index import CollectionConfig, RawItem
from s5vec.storage import BlobCorrupt, BlobId, LocalBlobStore, RootMirror, encode_blob
from s5vec.storage.portal import PortalBlobStore
from s5vec.storage.s5.seed import Identity, generate_phrase
from s5vec.testing.portal import FAULTS, PORTAL, create_test_portal

DIM = 8
CONFIG = EngineConfig(checkpoint_interval_s=3600, storage_probe_s=3600)
FAST = {"backoff": 0.001, "max_backoff": 0.01, "timeout": 5.0, "connect_timeout": 1.0, "retries": 0}
MARKER = "plaintext-marker-4c1d"
SHIP = ReplicationConfig(ship_interval_ms=50)


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
async def database(server: TestServer, identity: Identity, data_dir: Path, replication: ReplicationConfig = SHIP,
                   checkpoint: bool = False) -> AsyncIterator[Database]:
    async with portal_store(server, identity, data_dir) as store:
        db = await Database.open(data_dir, CONFIG, store, storage_mode="portal", replication=replication)
        try:
            yield db
        finally:
            await db.close(checkpoint=checkpoint)


def items(start: int, count: int) -> list[RawItem]:
    rng = np.random.default_rng(start)
    return [RawItem(f"r{i}", rng.normal(size=DIM).astype(np.float32), {"i": i, "note": MARKER})
            for i in range(start, start + count)]


async def shipped(db: Database, lsn: int) -> None:
    """Wait (bounded) until the shipper has published LSN ``lsn``."""
    assert db._shipper is not None
    async with asyncio.timeout(5):
        while db._shipper.shipped_lsn < lsn:
            await asyncio.sleep(0.01)


async def cpu(fn: Any, *args: Any) -> Any:
    return fn(*args)


async def test_a_new_node_with_only_the_phrase_recovers_every_shipped_write_without_a_checkpoint(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a") as writer:
        await writer.create_collection(CollectionConfig("c", DIM))
        for start in range(0, 300, 100):
            await writer.upsert("c", items(start, 100))
        await writer.delete("c", ["r7"])
        await writer.update_metadata("c", "r8", {"i": -8})
        assert writer.root is None  # no checkpoint: the records exist only in the WAL and its chunks
        await shipped(writer, writer.applied_lsn)
        lsn = writer.applied_lsn
        # the machine is lost: a new directory, the same phrase
        async with database(portal, identity, tmp_path / "b") as recovered:
            coll = recovered.collection("c")
            assert len(coll) == 299 and not coll.contains("r7")
            assert coll.get("r8").metadata == {"i": -8}
            assert coll.get("r299").metadata == {"i": 299, "note": MARKER}
            assert recovered.applied_lsn == lsn
            await recovered.upsert("c", items(1000, 1))  # LSNs go on from the adopted records
            assert recovered.applied_lsn == lsn + 1
    assert all(MARKER.encode() not in blob for blob in portal.app[PORTAL].blobs.values())  # chunks are encrypted


async def test_writes_after_the_last_shipping_round_are_shipped_by_the_same_node_on_restart(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a", ReplicationConfig(ship_interval_ms=60_000)) as db:
        await db.create_collection(CollectionConfig("c", DIM))
        await db.upsert("c", items(0, 20))
        assert db._shipper is not None and db._shipper.pending_records == 2
        portal.app[FAULTS].fail_next = 10_000  # the last round on close fails: the records stay local only
        lsn = db.applied_lsn
    portal.app[FAULTS].fail_next = 0
    async with portal_store(portal, identity, tmp_path / "probe") as store:
        assert await read_head(store, cpu) is None
    async with database(portal, identity, tmp_path / "a") as reopened:
        await shipped(reopened, lsn)
    async with database(portal, identity, tmp_path / "b") as recovered:
        assert len(recovered.collection("c")) == 20


async def test_a_checkpoint_folds_the_chain_and_garbage_collection_keeps_only_what_the_head_needs(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a") as db:
        await db.create_collection(CollectionConfig("c", DIM))
        for start in range(0, 60, 20):
            await db.upsert("c", items(start, 20))
            await shipped(db, db.applied_lsn)
        assert db._shipper is not None and len(db._shipper.chain) >= 2
        db._shipper.folded_keep_s = 0  # folded chunks leave the chain at once (60 s by default)
        before = set(db._shipper.referenced())
        root = await db.checkpoint()
        async with asyncio.timeout(5):
            while db._shipper.head in before:  # the folded head is published right after
                await asyncio.sleep(0.01)
        await db.upsert("c", items(60, 5))
        await shipped(db, db.applied_lsn)
        await db.collect_garbage()
        stored = {BlobId.of(data) for data in portal.app[PORTAL].blobs.values()}
        assert not before & stored  # chunks the manifest covers are gone
        assert db._shipper.referenced() <= stored
        async with portal_store(portal, identity, tmp_path / "probe") as store:
            head = await read_head(store, cpu)
            assert head is not None
            head_id, chunk = head
            assert chunk.manifest == root and chunk.manifest_lsn == db.checkpoint_lsn
            records = await shipped_records(store, head, db.checkpoint_lsn, cpu)
            assert [lsn for lsn, _ in records] == [db.applied_lsn]
        async with database(portal, identity, tmp_path / "b") as recovered:
            assert len(recovered.collection("c")) == 65 and recovered.root == root


async def test_replicated_durability_acknowledges_a_write_only_once_its_chunk_is_published(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    replicated = ReplicationConfig(ship_interval_ms=60_000, durability="replicated")
    async with database(portal, identity, tmp_path / "a", replicated) as db:
        await db.create_collection(CollectionConfig("c", DIM))
        portal.app[FAULTS].latency = 0.05
        for start in range(0, 40, 10):
            await db.upsert("c", items(start, 10))
            # acknowledged: the head on the portal already names it, long before the 60 s interval
            async with portal_store(portal, identity, tmp_path / f"probe{start}") as store:
                head = await read_head(store, cpu)
                assert head is not None and head[1].lsn == db.applied_lsn
        portal.app[FAULTS].latency = 0.0
        writes = [db.upsert("c", items(100 + i, 1)) for i in range(20)]
        await asyncio.gather(*writes)  # group commit: fewer chunks than writes
        assert db._shipper is not None and db._shipper.chunks_shipped < 5 + 20


async def test_replicated_durability_refuses_to_acknowledge_while_the_portal_fails(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    replicated = ReplicationConfig(ship_interval_ms=20, durability="replicated", ack_timeout_s=0.5)
    async with database(portal, identity, tmp_path / "a", replicated) as db:
        await db.create_collection(CollectionConfig("c", DIM))
        portal.app[FAULTS].fail_next = 10_000
        with pytest.raises(NotReplicated, match="not acknowledged"):
            await db.upsert("c", items(0, 1))
        assert db.collection("c").contains("r0")  # logged and applied here, only not acknowledged
        portal.app[FAULTS].fail_next = 0
        await db.upsert("c", items(1, 1))  # the backlog ships with it
        assert db._shipper is not None and db._shipper.shipped_lsn == db.applied_lsn


async def test_local_durability_acknowledges_while_the_portal_fails_and_ships_later(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a") as db:
        await db.create_collection(CollectionConfig("c", DIM))
        portal.app[FAULTS].fail_next = 10_000
        async with asyncio.timeout(2):
            await db.upsert("c", items(0, 5))
        assert db._shipper is not None
        async with asyncio.timeout(5):
            while not db._shipper.failures:
                await asyncio.sleep(0.01)
        assert db._shipper.shipped_lsn < db.applied_lsn and db._shipper.stats()["last_error"]
        portal.app[FAULTS].fail_next = 0
        await shipped(db, db.applied_lsn)


async def test_shipping_on_a_local_store_publishes_a_head_file(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "a", CONFIG, replication=SHIP)
    try:
        await db.create_collection(CollectionConfig("c", DIM))
        await db.upsert("c", items(0, 3))
        await shipped(db, db.applied_lsn)
        store = LocalBlobStore(tmp_path / "a")
        head = await read_head(store, cpu)
        assert head is not None and head[1].lsn == db.applied_lsn
        assert (tmp_path / "a" / "HEAD").read_text().strip() == str(head[0].base32())
    finally:
        await db.close(checkpoint=False)


def test_a_malformed_chunk_is_refused_with_the_reason() -> None:
    where = BlobId.of(b"x")
    good = encode_chunk(5, 1, [b"a", b"b"], None, 4, [])
    assert decode_chunk(good, where).last == 6
    with pytest.raises(BlobCorrupt, match="not an s5vec WAL chunk"):
        decode_chunk(encode_blob({"format": "other"}), where)
    with pytest.raises(BlobCorrupt, match="'records' must be a list"):
        decode_chunk(encode_blob({"format": "s5vec-wal-chunk", "version": 1, "first": 1, "epoch": 0,
                                  "manifest_lsn": 0, "records": "x", "manifest": None, "chain": []}), where)
    from s5vec.engine.shipping import ChunkRef
    gap = encode_chunk(9, 1, [b"a"], None, 0, [ChunkRef(1, 5, where)])
    with pytest.raises(BlobCorrupt, match="chain ends before LSN 6"):
        decode_chunk(gap, where)


async def test_a_writer_replaced_by_a_newer_epoch_stops_acknowledging_and_loses_nothing_acknowledged(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    replicated = ReplicationConfig(ship_interval_ms=20, durability="replicated")
    async with database(portal, identity, tmp_path / "old", replicated) as old:
        await old.create_collection(CollectionConfig("c", DIM))
        await old.upsert("c", items(0, 10))
        newer = ReplicationConfig(ship_interval_ms=20, durability="replicated", epoch=7)
        async with database(portal, identity, tmp_path / "new", newer) as new:  # takes over: publishes epoch 7
            assert len(new.collection("c")) == 10
            async with portal_store(portal, identity, tmp_path / "probe") as store:
                head = await read_head(store, cpu)
                assert head is not None and head[1].epoch == 7
            with pytest.raises(NotWriter, match="another writer moved the replication head"):
                await old.upsert("c", items(100, 1))  # logged on the old node, never acknowledged
            with pytest.raises(NotWriter):
                await old.upsert("c", items(101, 1))  # refused before logging
            assert old.not_writer() is not None and old.shipping["deposed"]
            await new.upsert("c", items(10, 5))
            assert len(new.collection("c")) == 15 and not new.collection("c").contains("r100")


async def test_a_lost_lease_fences_acknowledgements_and_publishing(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a", ReplicationConfig(ship_interval_ms=20,
                                                                            durability="replicated")) as db:
        await db.create_collection(CollectionConfig("c", DIM))
        lease = {"lost": None}
        db.write_fence = lambda: lease["lost"]
        assert db._shipper is not None
        db._shipper.fence = db.write_fence
        await db.upsert("c", items(0, 1))
        lease["lost"] = "the leadership lease expired"
        with pytest.raises(NotWriter, match="lease expired"):
            await db.upsert("c", items(1, 1))
        head = db._shipper.head
        assert not await db._shipper.ship() and db._shipper.head == head  # publishes nothing


async def test_a_replaced_writer_reopened_sets_its_diverged_wal_aside_and_follows_the_chain(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    replicated = ReplicationConfig(ship_interval_ms=20, durability="replicated")
    async with database(portal, identity, tmp_path / "old", replicated) as old:
        await old.create_collection(CollectionConfig("c", DIM))
        await old.upsert("c", items(0, 10))
        async with database(portal, identity, tmp_path / "new",
                            ReplicationConfig(ship_interval_ms=20, durability="replicated", epoch=7)) as new:
            with pytest.raises(NotWriter):
                await old.upsert("c", items(100, 1))  # in the old node's WAL only, never acknowledged
            await new.upsert("c", items(10, 5))
            lsn = new.applied_lsn
    async with database(portal, identity, tmp_path / "old",
                        ReplicationConfig(ship_interval_ms=20, durability="replicated", epoch=8)) as reopened:
        coll = reopened.collection("c")
        assert len(coll) == 15 and not coll.contains("r100") and reopened.applied_lsn == lsn
        assert list(tmp_path.joinpath("old").glob("wal-diverged-*"))


async def test_a_writer_that_opened_while_the_portal_was_down_takes_up_the_head_once_it_answers(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a", checkpoint=True) as db:
        await db.create_collection(CollectionConfig("c", DIM))
        await db.upsert("c", items(0, 5))
        await shipped(db, db.applied_lsn)
    portal.app[FAULTS].fail_next = 10_000
    async with database(portal, identity, tmp_path / "a") as db:  # starts from its root copy and WAL
        await db.upsert("c", items(5, 5))
        portal.app[FAULTS].fail_next = 0
        await shipped(db, db.applied_lsn)
        assert db.not_writer() is None and db._shipper is not None and db._shipper.deposed is None
    async with database(portal, identity, tmp_path / "b") as fresh:
        assert len(fresh.collection("c")) == 10
