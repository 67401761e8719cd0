"""Backups: create → wipe → restore round trips, restore to a time, verify, export/import,
retention, and restores that fail midway."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from s5vec.index import CollectionConfig, RawItem
from s5vec.engine import Database, EngineConfig
from s5vec.ops.backup import (
    Backup,
    BackupCatalog,
    BackupNotFound,
    RestoreRefused,
    create_backup,
    export_backup,
    import_backup,
    lock_directory,
    restore_in_place,
    restore_raw,
    restore_to_directory,
    retained,
    unlock_directory,
)
from s5vec.storage import BlobCorrupt, BlobId, BlobStore, LocalBlobStore, StorageError

DIM = 12
ENGINE = EngineConfig(checkpoint_interval_s=3600, migrate_interval_s=3600)
OLD = time.time() - 30 * 86_400
Records = dict[str, dict[str, tuple[bytes, Any, float]]]


def items(start: int, count: int, timestamp: float | None = None) -> list[RawItem]:
    rng = np.random.default_rng(start)
    return [RawItem(f"r{i}", rng.normal(size=DIM).astype(np.float32),
                    {"i": i, "genre": ["drama", "sci-fi"][i % 2], "title": f"t{i}"}, timestamp)
            for i in range(start, start + count)]


async def dump(db: Database) -> Records:
    """Every live record of every collection: vector bytes, metadata, timestamp (read on
    the database's workers: a lazily loaded segment fetches its blobs through the loop)."""
    out: Records = {}
    for name, coll in db.collections.items():
        ids = list(coll.recent.labels)
        for segment in coll.segments:
            ids += [segment.id_of(pos) for pos in np.flatnonzero(~segment.deleted).tolist()]
        records = {}
        for rid in ids:
            hit = await db.get(name, rid)
            assert hit.vector is not None
            records[rid] = (hit.vector.tobytes(), hit.metadata, hit.timestamp or 0.0)
        out[name] = records
    return out


async def populated(path: Path) -> Database:
    """Two collections, one with a sealed segment, edits, deletes and payload indexes."""
    db = await Database.open(path, ENGINE)
    await db.create_collection(CollectionConfig("videos", DIM, payload=(("genre", "keyword"),)))
    await db.create_collection(CollectionConfig("audio", DIM, metric="l2"))
    await db.upsert("videos", items(0, 300))
    await db.upsert("videos", items(1000, 300, OLD))
    await db.migrate()
    await db.upsert("audio", items(2000, 80))
    await db.delete("videos", ["r3", "r1003"])
    await db.update_metadata("videos", "r1010", {"edited": True})
    await db.update_metadata("videos", "r10", {"edited": "recent"})
    await db.wait_indexed()
    return db


async def wipe(db: Database) -> None:
    """Lose the data the way an operator might: drop and refill with something else."""
    await db.drop_collection("videos")
    await db.delete("audio", [f"r{i}" for i in range(2000, 2040)])
    await db.create_collection(CollectionConfig("junk", 3))
    await db.upsert("junk", [RawItem("x", [1.0, 0.0, 0.0])])
    await db.checkpoint()


async def test_backup_then_wipe_then_restore_brings_back_every_record(tmp_path: Path) -> None:
    db = await populated(tmp_path / "d")
    expected = await dump(db)
    assert len(expected["videos"]) == 598 and len(expected["audio"]) == 80
    backup = await create_backup(db, "before")
    await wipe(db)
    wiped = await dump(db)
    assert "videos" not in wiped
    report = await restore_in_place(db, backup, force=True)
    assert report["safety_backup"]["label"] == "pre-restore"
    await db.close()
    db = await Database.open(tmp_path / "d", ENGINE)
    assert await dump(db) == expected
    assert db.collection("videos").segments and db.collection("videos").get("r1010").metadata == {"edited": True}
    await db.upsert("videos", items(5000, 5))  # writable again, and durable
    await db.close()
    db = await Database.open(tmp_path / "d", ENGINE)
    assert len((await dump(db))["videos"]) == 603
    # the state the restore replaced is a backup too
    safety = await db.backups.find(report["safety_backup"]["id"])
    await restore_in_place(db, safety, force=True)
    await db.close()
    db = await Database.open(tmp_path / "d", ENGINE)
    assert await dump(db) == wiped
    await db.close()


async def test_restore_into_a_new_directory_leaves_the_source_alone(tmp_path: Path) -> None:
    db = await populated(tmp_path / "src")
    expected = await dump(db)
    backup = await create_backup(db)
    await db.upsert("audio", items(3000, 5))
    target = tmp_path / "copy"
    done: list[tuple[int, int]] = []
    report = await restore_to_directory(db.store, db.backups, backup, target, lambda d, t: done.append((d, t)))
    assert report["directory"] == str(target.absolute()) and done[-1][0] == done[-1][1] == report["bytes"]
    assert len((await dump(db))["audio"]) == 85
    await db.close()
    copy = await Database.open(target, ENGINE)
    assert await dump(copy) == expected and [b.id for b in await copy.backups.backups()] == [backup.id]
    await copy.close()
    with pytest.raises(RestoreRefused):
        await restore_to_directory(LocalBlobStore(tmp_path / "src"), BackupCatalog(tmp_path / "src",
                                   LocalBlobStore(tmp_path / "src")), backup, target)


async def test_restore_refuses_to_replace_data_without_force(tmp_path: Path) -> None:
    db = await populated(tmp_path / "d")
    backup = await create_backup(db)
    await db.upsert("audio", items(4000, 3))
    expected = await dump(db)
    with pytest.raises(RestoreRefused):
        await restore_in_place(db, backup)
    assert db.ready and await dump(db) == expected
    await db.close()
    db = await Database.open(tmp_path / "d", ENGINE)
    assert await dump(db) == expected
    await db.close()


async def test_restore_to_a_timestamp_picks_the_nearest_earlier_backup(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, ENGINE)
    await db.create_collection(CollectionConfig("c", DIM))
    t0 = 1_700_000_000.0
    made = []
    for n in range(3):
        await db.upsert("c", items(n * 10, 10))
        made.append(await create_backup(db, f"b{n}", created=t0 + n * 100))
    catalog = db.backups
    assert (await catalog.at(t0 + 150)).id == made[1].id
    assert (await catalog.at(t0 + 200)).id == made[2].id
    assert (await catalog.at(t0 + 10**6)).id == made[2].id
    with pytest.raises(BackupNotFound):
        await catalog.at(t0 - 1)
    assert (await catalog.find("latest")).id == made[2].id
    assert (await catalog.find(str(made[0].id)[:12])).id == made[0].id
    with pytest.raises(BackupNotFound):
        await catalog.find("bzzzz")
    await restore_in_place(db, await catalog.at(t0 + 150), force=True)
    await db.close()
    db = await Database.open(tmp_path, ENGINE)
    assert sorted(db.collection("c").recent.labels) == sorted(f"r{i}" for i in range(20))
    await db.close()


async def test_verify_detects_a_flipped_byte_and_a_missing_blob(tmp_path: Path) -> None:
    db = await populated(tmp_path)
    backup = await create_backup(db)
    report = await db.backups.verify(backup)
    assert report["ok"] and report["blobs"] == len(await db.backups.blobs_of(backup))
    blobs = sorted(await db.backups.blobs_of(backup), key=lambda b: b.size)
    flipped, missing = blobs[-1], blobs[-2]
    path = db.data_dir / "blobs" / str(flipped)[-2:] / str(flipped)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x40
    path.write_bytes(bytes(raw))
    (db.data_dir / "blobs" / str(missing)[-2:] / str(missing)).unlink()
    report = await db.backups.verify(backup)
    assert not report["ok"] and report["corrupt"] == [str(flipped)] and report["missing"] == [str(missing)]
    with pytest.raises(BlobCorrupt):
        await restore_in_place(db, backup, force=True)  # nothing replaced by a damaged backup
    assert db.ready
    await db.close(checkpoint=False)


async def test_export_then_import_into_a_second_data_directory(tmp_path: Path) -> None:
    db = await populated(tmp_path / "a")
    expected = await dump(db)
    backup = await create_backup(db, "portable")
    file = tmp_path / "backup.s5vec"
    report = await export_backup(db.store, db.backups, backup, file)
    assert file.exists() and report["blobs"] == len(await db.backups.blobs_of(backup))
    again = await export_backup(db.store, db.backups, backup, tmp_path / "again.s5vec")
    assert file.read_bytes() == (tmp_path / "again.s5vec").read_bytes()  # deterministic
    await db.close()

    other = tmp_path / "b"
    fd = lock_directory(other)
    store = LocalBlobStore(other)
    imported = await import_backup(file, store, BackupCatalog(other, store))
    unlock_directory(fd)
    assert imported == backup and again["bytes"] == report["bytes"]
    db = await Database.open(other, ENGINE)
    assert db.collections == {} and [b.label for b in await db.backups.backups()] == ["portable"]
    assert (await db.backups.verify(imported))["ok"]
    await restore_in_place(db, imported)  # an empty directory needs no force
    await db.close()
    db = await Database.open(other, ENGINE)
    assert await dump(db) == expected
    await db.close()


async def test_a_damaged_export_is_refused_and_changes_no_catalog(tmp_path: Path) -> None:
    db = await populated(tmp_path / "a")
    backup = await create_backup(db)
    file = tmp_path / "backup.s5vec"
    await export_backup(db.store, db.backups, backup, file)
    await db.close()
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    damaged = tmp_path / "damaged.s5vec"
    damaged.write_bytes(bytes(raw))
    truncated = tmp_path / "truncated.s5vec"
    truncated.write_bytes(file.read_bytes()[: len(raw) * 2 // 3])
    for bad in (damaged, truncated):
        store = LocalBlobStore(tmp_path / "b")
        catalog = BackupCatalog(tmp_path / "b", store)
        with pytest.raises(BlobCorrupt):
            await import_backup(bad, store, catalog)
        assert await catalog.backups() == []


class FailingRoot:
    """A store whose root pointer refuses to move: a restore dies at its last step."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def set_root(self, new: BlobId, expected: BlobId | None) -> None:
        raise StorageError("power cut")


class FailingGets:
    """A store that fails after ``allowed`` reads: a copy dies halfway."""

    def __init__(self, inner: BlobStore, allowed: int) -> None:
        self.inner, self.allowed = inner, allowed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, blob_id: BlobId) -> bytes:
        self.allowed -= 1
        if self.allowed < 0:
            raise StorageError("disk vanished")
        return await self.inner.get(blob_id)


async def test_an_interrupted_restore_leaves_the_old_state_intact(tmp_path: Path) -> None:
    db = await populated(tmp_path / "d")
    backup = await create_backup(db)
    await wipe(db)
    current = await dump(db)
    root = db.root
    db.store = FailingRoot(db.store)  # type: ignore[assignment]
    with pytest.raises(StorageError, match="power cut"):
        await restore_in_place(db, backup, force=True)
    await db.close()
    db = await Database.open(tmp_path / "d", ENGINE)
    assert db.root == root and await dump(db) == current
    await db.close()

    source = LocalBlobStore(tmp_path / "d")
    target = tmp_path / "new"
    with pytest.raises(StorageError, match="disk vanished"):
        await restore_to_directory(FailingGets(source, 3), BackupCatalog(tmp_path / "d", source), backup, target)
    assert not target.exists() and not list(tmp_path.glob(".new.restoring-*"))


async def test_a_restore_over_an_unreadable_state_still_works(tmp_path: Path) -> None:
    db = await populated(tmp_path / "d")
    expected = await dump(db)
    backup = await create_backup(db)
    await db.upsert("audio", items(6000, 5))
    await db.close()  # the final checkpoint writes a manifest the backup does not share
    current = (tmp_path / "d" / "ROOT").read_text().strip()
    path = tmp_path / "d" / "blobs" / current[-2:] / current
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(BlobCorrupt):
        await Database.open(tmp_path / "d", ENGINE)
    fd = lock_directory(tmp_path / "d")
    store = LocalBlobStore(tmp_path / "d")
    report = await restore_raw(tmp_path / "d", store, BackupCatalog(tmp_path / "d", store), backup)
    unlock_directory(fd)
    assert report["safety_backup"] is None
    db = await Database.open(tmp_path / "d", ENGINE)
    assert await dump(db) == expected
    await db.close()


def test_retention_keeps_the_last_n_and_the_newest_of_each_recent_day_and_week() -> None:
    def at(day: int, hour: int, label: str) -> Backup:
        created = dt.datetime(2025, 3, 1, hour).timestamp() + (day - 1) * 86_400 if day > 0 else \
            dt.datetime(2025, 2, 28 + day, hour).timestamp()
        return Backup(BlobId.of(label.encode()), BlobId.of(b"m"), created, 0, label)

    backups = [at(10, 9, "a"), at(10, 18, "b"),  # Monday 10 March (ISO week 11)
               at(9, 12, "c"), at(8, 12, "d"), at(3, 12, "e"),  # Sunday, Saturday, Monday of week 10
               at(-4, 12, "f"), at(-11, 12, "g")]  # Mondays 24 and 17 February (weeks 9, 8)
    assert [dt.datetime.fromtimestamp(b.created).date().isoformat() for b in backups] == [
        "2025-03-10", "2025-03-10", "2025-03-09", "2025-03-08", "2025-03-03", "2025-02-24", "2025-02-17"]
    keep = retained(backups, keep_last=1, keep_daily=2, keep_weekly=3)
    assert sorted(b.label for b in backups if b.id in keep) == ["b", "c", "f"]
    assert sorted(b.label for b in backups if b.id in retained(backups, 3, 0, 0)) == ["a", "b", "c"]
    assert len(retained(backups, 1, 100, 0)) == 6  # one per day that has a backup


async def test_the_gc_pins_cover_a_backup_created_while_checkpoints_run(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, dataclasses.replace(ENGINE, keep_manifests=1))
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 40))
    backup = await create_backup(db)
    pinned = await db.backups.pinned()
    assert {backup.id, backup.manifest} | set(await db.backups.manifest_blobs(backup.manifest)) <= pinned
    await db.drop_collection("c")
    await db.checkpoint()
    await db.checkpoint()
    assert (await db.backups.verify(backup))["ok"]
    await db.close()
