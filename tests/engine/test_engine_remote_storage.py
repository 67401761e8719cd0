"""The engine on an S5 portal (the in-process double): restore from the registry root,
degraded checkpoints that keep the WAL and the root, start-up from the local root copy,
garbage collection limited to this node's uploads."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from s5vec.index import CollectionConfig, RawItem
from s5vec.engine import Database, EngineConfig, Query, read_manifest, referenced_blobs
from s5vec.storage import BackendUnavailable, BlobId, RootMirror, StorageError
from s5vec.storage.portal import PortalBlobStore
from s5vec.storage.s5.seed import Identity, generate_phrase
from s5vec.testing.portal import FAULTS, PORTAL, create_test_portal

DIM = 8
CONFIG = EngineConfig(checkpoint_interval_s=3600, storage_probe_s=3600)
FAST = {"backoff": 0.001, "max_backoff": 0.01, "timeout": 5.0, "connect_timeout": 1.0, "retries": 1}
MARKER = "plaintext-marker-7f3a"


@pytest.fixture
def identity() -> Identity:
    return Identity.from_phrase(generate_phrase())


@pytest.fixture
async def portal(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(create_test_portal())
    return server


def portal_url(server: TestServer) -> str:
    return str(server.make_url("/"))


@asynccontextmanager
async def portal_store(server: TestServer, identity: Identity, data_dir: Path) -> AsyncIterator[RootMirror]:
    remote = PortalBlobStore(portal_url(server), identity, cache_dir=data_dir / "s5-cache",
                             **FAST)  # type: ignore[arg-type]
    data_dir.mkdir(parents=True, exist_ok=True)
    async with RootMirror(remote, data_dir / "ROOT") as store:
        yield store


@asynccontextmanager
async def database(server: TestServer, identity: Identity, data_dir: Path,
                   checkpoint: bool = False) -> AsyncIterator[Database]:
    async with portal_store(server, identity, data_dir) as store:
        db = await Database.open(data_dir, CONFIG, store, storage_mode="portal")
        try:
            yield db
        finally:
            await db.close(checkpoint=checkpoint)


def items(start: int, count: int) -> list[RawItem]:
    rng = np.random.default_rng(start)
    return [RawItem(f"r{i}", rng.normal(size=DIM).astype(np.float32), {"i": i, "note": MARKER})
            for i in range(start, start + count)]


def registry_root(server: TestServer) -> Any:
    entries = list(server.app[PORTAL].registry.values())
    return None if not entries else (entries[0].revision, entries[0].data)


async def test_a_second_node_restores_every_record_from_the_registry_root_alone(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a") as db:
        await db.create_collection(CollectionConfig("c", DIM))
        await db.upsert("c", items(0, 300))
        root = await db.checkpoint()
    assert root is not None
    async with database(portal, identity, tmp_path / "b") as restored:
        assert restored.root == root
        coll = restored.collection("c")
        assert len(coll) == 300
        assert coll.get("r123").metadata == {"i": 123, "note": MARKER}
        hits, _ = await restored.search("c", items(0, 300)[42].vector, Query(k=1))
        assert hits[0].id == "r42"
    assert all(MARKER.encode() not in blob for blob in portal.app[PORTAL].blobs.values())


async def test_checkpoint_against_a_failing_portal_keeps_the_wal_and_the_root_and_reports_degraded(
        portal: TestServer, identity: Identity, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with database(portal, identity, tmp_path / "a") as db:
        await db.create_collection(CollectionConfig("c", DIM))
        await db.upsert("c", items(0, 50))
        first = await db.checkpoint()
        before = registry_root(portal)
        await db.upsert("c", items(50, 50))  # acknowledged from the WAL while the portal fails
        portal.app[FAULTS].fail_next = 10_000
        caplog.set_level(logging.INFO, logger="s5vec.engine.database")
        for _ in range(3):
            with pytest.raises(BackendUnavailable):
                await db.checkpoint()
        assert db.root == first and registry_root(portal) == before
        assert db.wal_bytes > 0 and db.checkpoint_lsn < db.applied_lsn
        health = db.storage.as_dict()
        assert health["degraded"] and health["consecutive_failures"] == 3 and health["failures_total"] == 3
        assert "BackendUnavailable" in health["last_error"]
        assert not await db.probe_storage() and not db.storage.reachable
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2  # one for the failing streak, one for the probe: not one per retry

        portal.app[FAULTS].fail_next = 0
        second = await db.checkpoint()
        assert second != first and registry_root(portal) != before
        assert not db.storage.degraded and db.storage.consecutive_failures == 0
        assert db.checkpoint_lsn == db.applied_lsn
    async with database(portal, identity, tmp_path / "b") as restored:
        assert len(restored.collection("c")) == 100


async def test_a_node_starts_from_its_root_copy_and_wal_while_the_portal_is_down(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a") as db:
        await db.create_collection(CollectionConfig("c", DIM))
        await db.upsert("c", items(0, 40))
        await db.checkpoint()
        await db.upsert("c", items(40, 40))  # only in the WAL
    portal.app[FAULTS].fail_next = 10_000
    async with database(portal, identity, tmp_path / "a") as reopened:
        assert len(reopened.collection("c")) == 80
        assert reopened.collection("c").get("r70").metadata["i"] == 70


async def test_a_node_without_a_root_copy_cannot_start_while_the_portal_is_down(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    portal.app[FAULTS].fail_next = 10_000
    with pytest.raises(BackendUnavailable, match="no copy of the root pointer"):
        async with database(portal, identity, tmp_path / "a"):
            pass


async def test_a_root_copy_the_portal_does_not_know_is_refused(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a") as db:
        await db.create_collection(CollectionConfig("c", DIM))
        await db.checkpoint()
    other = Identity.from_phrase(generate_phrase())  # another phrase: another registry key
    with pytest.raises(StorageError, match="another seed phrase"):
        async with database(portal, other, tmp_path / "a"):
            pass


async def test_an_unacknowledged_root_swap_that_landed_is_adopted_by_the_next_checkpoint(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a") as db:
        await db.create_collection(CollectionConfig("c", DIM))
        await db.upsert("c", items(0, 10))
        first = await db.checkpoint()
        await db.upsert("c", items(10, 10))
        faults = portal.app[FAULTS]
        faults.target, faults.drop_replies = "POST /s5/registry", 100  # the swap lands, its reply is lost
        with pytest.raises(BackendUnavailable):
            await db.checkpoint()
        assert db.root == first and registry_root(portal)[0] == 1  # landed, unacknowledged
        faults.drop_replies = 0
        await db.upsert("c", items(20, 10))
        final = await db.checkpoint()
        assert db.root == final and not db.storage.degraded
    async with database(portal, identity, tmp_path / "b") as restored:
        assert restored.root == final and len(restored.collection("c")) == 30


async def test_garbage_collection_deletes_only_this_nodes_unreferenced_uploads(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with portal_store(portal, identity, tmp_path / "other") as other:
        foreign = await other.put(b"a blob another node uploaded")
    async with database(portal, identity, tmp_path / "a") as db:
        await db.create_collection(CollectionConfig("c", DIM))
        for round_ in range(4):
            await db.upsert("c", items(round_ * 10, 10))
            await db.checkpoint()
        uploaded = set(await db.store.list())
        referenced = await kept_blobs(db)
    stored = {BlobId.of(data) for data in portal.app[PORTAL].blobs.values()}
    assert foreign in stored  # never uploaded by this node: never deleted by it
    assert uploaded == referenced  # every upload no kept manifest references is gone ...
    assert uploaded <= stored  # ... from the journal and from the portal alike
    assert db.config.keep_manifests == 2 and len(stored) == len(uploaded) + 1


async def kept_blobs(db: Database) -> set[BlobId]:
    """The blobs of the last ``keep_manifests`` manifests (and the manifests)."""
    keep: set[BlobId] = set()
    manifest_id = db.root
    for _ in range(db.config.keep_manifests):
        assert manifest_id is not None
        manifest = await read_manifest(db.store, manifest_id)
        keep |= {manifest_id, *referenced_blobs(manifest)}
        manifest_id = BlobId.from_bytes(manifest["previous"]) if manifest["previous"] else None
    return keep


async def test_a_checkpoint_with_nothing_new_does_not_clear_an_unreachable_backend(
        portal: TestServer, identity: Identity, tmp_path: Path) -> None:
    async with database(portal, identity, tmp_path / "a") as db:
        await db.create_collection(CollectionConfig("c", DIM))
        root = await db.checkpoint()
        portal.app[FAULTS].fail_next = 10_000
        assert not await db.probe_storage()
        assert await db.checkpoint() == root  # nothing changed: the portal is not even asked
        assert db.storage.degraded and not db.storage.reachable
        portal.app[FAULTS].fail_next = 0
        assert await db.probe_storage() and not db.storage.degraded
