"""The WAL and the local blob store under injected disk faults: ENOSPC/EIO on write, failed
fsyncs, failed renames, torn tails, crash leftovers and flipped bytes. Nothing acknowledged
is lost, nothing half-written is read back, every failure is a StorageError."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from s5vec.storage import (
    BlobCorrupt, BlobId, LocalBlobStore, StorageError, StorageFull, WalFailed, WriteAheadLog, fsync_dir,
)
from s5vec.storage.wal import frame
from s5vec.testing.diskfaults import DiskFaults

DATA = b"acknowledged bytes " * 64


@pytest.fixture
def disk() -> Iterator[DiskFaults]:
    faults = DiskFaults()
    with faults.installed():
        yield faults


def opened(directory: Path, segment_bytes: int = 64 << 20) -> WriteAheadLog:
    wal = WriteAheadLog(directory, segment_bytes)
    list(wal.recover(0))
    return wal


def recovered(directory: Path) -> list[tuple[int, bytes]]:
    wal = WriteAheadLog(directory)
    try:
        return list(wal.recover(0))
    finally:
        wal.close()


# ------------------------------------------------------------------------------ WAL
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("partial", [False, True], ids=["nothing-written", "half-a-frame-written"])
def test_a_failed_wal_write_is_refused_and_the_next_append_lands_after_the_last_good_frame(
        tmp_path: Path, disk: DiskFaults, err: int, partial: bool) -> None:
    wal = opened(tmp_path)
    assert wal.append([b"a1", b"a2"]) == 2
    disk.arm("write", err, str(tmp_path), partial=partial)
    with pytest.raises(StorageFull if err == errno.ENOSPC else StorageError) as raised:
        wal.append([b"refused"])
    assert not isinstance(raised.value, WalFailed) and wal.failed is None and wal.write_errors == 1
    assert wal.append([b"a3"]) == 3  # the log keeps going once space is back
    wal.close()
    # a restart sees every acknowledged record: the torn half frame did not hide a3
    assert recovered(tmp_path) == [(1, b"a1"), (2, b"a2"), (3, b"a3")]


def test_a_wal_that_cannot_cut_back_a_torn_tail_refuses_later_appends_so_none_is_lost(
        tmp_path: Path, disk: DiskFaults) -> None:
    wal = opened(tmp_path)
    wal.append([b"a1"])
    disk.arm("write", errno.ENOSPC, str(tmp_path), partial=True)
    disk.arm("ftruncate", errno.EIO, str(tmp_path))
    with pytest.raises(WalFailed):
        wal.append([b"refused"])
    # an append after the garbage would be acknowledged and then lost at recovery: refuse it
    with pytest.raises(WalFailed, match="restart"):
        wal.append([b"also refused"])
    wal.close()
    assert recovered(tmp_path) == [(1, b"a1")]


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_a_failed_wal_fsync_refuses_that_write_and_every_later_one_until_restart(
        tmp_path: Path, disk: DiskFaults, err: int) -> None:
    wal = opened(tmp_path)
    wal.append([b"a1", b"a2"])
    disk.arm("fsync", err, str(tmp_path))
    with pytest.raises(WalFailed, match="fsync failed"):
        wal.append([b"unknown outcome"])
    disk.disarm()
    with pytest.raises(WalFailed):  # the page cache may lie now: no acknowledgements from it
        wal.append([b"refused"])
    assert wal.failed is not None
    wal.close()
    wal = opened(tmp_path)  # the restart: recovery reads what is really on disk
    assert wal.append([b"a3"]) == 3
    wal.close()
    assert recovered(tmp_path) == [(1, b"a1"), (2, b"a2"), (3, b"a3")]


def test_a_failed_fsync_whose_cut_back_also_fails_may_replay_the_unacknowledged_record_but_loses_nothing(
        tmp_path: Path, disk: DiskFaults) -> None:
    wal = opened(tmp_path)
    wal.append([b"a1"])
    disk.arm("fsync", errno.EIO, str(tmp_path))
    disk.arm("ftruncate", errno.EIO, str(tmp_path))
    with pytest.raises(WalFailed):
        wal.append([b"maybe"])
    wal.close()
    records = recovered(tmp_path)
    assert records[:1] == [(1, b"a1")] and records[1:] in ([], [(2, b"maybe")])


def test_a_wal_segment_that_cannot_be_created_keeps_the_current_segment_in_use(
        tmp_path: Path, disk: DiskFaults) -> None:
    wal = opened(tmp_path, segment_bytes=64)
    assert wal.append([b"first"]) == 1
    disk.arm("open", errno.ENOSPC, str(tmp_path), times=None)
    for n in range(2, 6):  # each append fills the segment; rolling over fails, appends do not
        assert wal.append([b"x" * 80 + bytes([n])]) == n
    with pytest.raises(StorageFull):
        wal.rotate()  # a checkpoint's rotation fails: the checkpoint fails, the WAL stays
    disk.disarm()
    assert wal.append([b"after"]) == 6
    wal.close()
    assert [lsn for lsn, _ in recovered(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_a_new_wal_segment_whose_directory_entry_cannot_be_synced_is_not_used(
        tmp_path: Path, disk: DiskFaults) -> None:
    wal = opened(tmp_path)
    wal.append([b"a1"])
    disk.arm("fsync", errno.EIO, lambda path: path == str(tmp_path))
    with pytest.raises(StorageError):
        wal.rotate()
    assert wal.append([b"a2"]) == 2  # still the first segment: its name is durable
    wal.close()
    assert recovered(tmp_path) == [(1, b"a1"), (2, b"a2")]


def test_failing_to_delete_checkpointed_wal_segments_raises_storage_error_and_keeps_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = opened(tmp_path)
    wal.append([b"a1"])
    wal.rotate()
    wal.append([b"a2"])

    def unlink(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EIO, "Input/output error", str(self))

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(StorageError, match="checkpointed WAL segments"):
        wal.truncate_through(1)
    monkeypatch.undo()
    wal.close()
    assert recovered(tmp_path) == [(1, b"a1"), (2, b"a2")]


@pytest.mark.parametrize("tail", [frame(3, b"torn")[:-2], frame(3, b"torn")[:5], b"\xff" * 40],
                         ids=["cut-mid-payload", "cut-mid-header", "garbage"])
def test_appends_after_recovering_a_torn_wal_tail_survive_the_next_restart(tmp_path: Path, tail: bytes) -> None:
    wal = opened(tmp_path)
    wal.append([b"a1", b"a2"])
    wal.close()
    (segment,) = tmp_path.glob("*.wal")
    with open(segment, "ab") as fh:
        fh.write(tail)  # the crash came mid-append
    wal = opened(tmp_path)
    assert wal.append([b"a3"]) == 3
    wal.close()
    assert recovered(tmp_path) == [(1, b"a1"), (2, b"a2"), (3, b"a3")]


# ------------------------------------------------------------------------ blob store
def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(("call", "err", "kind"), [
    ("write", errno.ENOSPC, StorageFull), ("write", errno.EIO, StorageError),
    ("fsync", errno.EIO, StorageError), ("replace", errno.EIO, StorageError)])
async def test_a_failed_blob_put_raises_leaves_nothing_behind_and_a_retry_stores_it(
        tmp_path: Path, disk: DiskFaults, call: str, err: int, kind: type[StorageError]) -> None:
    store = LocalBlobStore(tmp_path)
    disk.arm(call, err, "/blobs/", partial=True)
    with pytest.raises(kind):
        await store.put(DATA)
    assert files(tmp_path / "blobs") == []  # no temporary, no half blob under its name
    assert store.stats["errors"]["put"] == 1
    blob_id = await store.put(DATA)
    assert await store.get(blob_id) == DATA


async def test_a_blob_whose_directory_fsync_failed_is_made_durable_by_the_next_put(
        tmp_path: Path, disk: DiskFaults) -> None:
    store = LocalBlobStore(tmp_path)
    disk.arm("fsync", errno.EIO, lambda path: path.endswith(BlobId.of(DATA).base32()[-2:]))
    with pytest.raises(StorageError):
        await store.put(DATA)  # renamed into place, but its name may not be on disk yet
    synced: list[str] = []
    disk.arm("fsync", errno.EIO, lambda path: synced.append(path) and False)  # records, never fails
    assert await store.put(DATA) == BlobId.of(DATA)
    assert any(path.endswith(BlobId.of(DATA).base32()[-2:]) for path in synced)


@pytest.mark.parametrize(("call", "where", "err", "kind"), [
    ("write", "/.ROOT.", errno.ENOSPC, StorageFull), ("fsync", "/.ROOT.", errno.EIO, StorageError),
    ("replace", "/ROOT", errno.EIO, StorageError)])
async def test_a_failed_root_swap_raises_storage_error_and_keeps_the_previous_root(
        tmp_path: Path, disk: DiskFaults, call: str, where: str, err: int, kind: type[StorageError]) -> None:
    store = LocalBlobStore(tmp_path)
    first, second = await store.put(b"manifest 1"), await store.put(b"manifest 2")
    await store.set_root(first, None)
    disk.arm(call, err, where)
    with pytest.raises(kind):
        await store.set_root(second, first)
    assert await store.get_root() == first
    assert not list(tmp_path.glob(".*.tmp"))
    await store.set_root(second, first)
    assert await store.get_root() == second


async def test_a_blob_with_a_flipped_byte_is_never_returned_and_is_counted_until_repaired(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob_id = await store.put(DATA)
    (path,) = (tmp_path / "blobs").glob("*/b*")
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    path.write_bytes(bytes(damaged))
    for _ in range(2):
        with pytest.raises(BlobCorrupt):
            await store.get(blob_id)
    assert store.corrupt == {blob_id} and store.stats["errors"]["get"] == 2
    assert await store.put(DATA) == blob_id  # a put of the right bytes repairs it
    assert await store.get(blob_id) == DATA and store.corrupt == set()


async def test_a_blob_read_that_fails_with_eio_raises_storage_error_not_os_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)
    blob_id = await store.put(DATA)

    def read_bytes(self: Path) -> bytes:
        raise OSError(errno.EIO, "Input/output error", str(self))

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(StorageError, match="Input/output error"):
        await store.get(blob_id)


async def test_temporary_files_left_by_a_crash_are_never_listed_and_are_removed_on_request(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob_id = await store.put(DATA)
    (path,) = (tmp_path / "blobs").glob("*/b*")
    stale = path.parent / f".{path.name}.999999.1.tmp"
    stale.write_bytes(DATA[:100])  # written, never renamed
    stale_root = tmp_path / ".ROOT.999999.1.tmp"
    stale_root.write_bytes(b"b")
    own = path.parent / f".{path.name}.{os.getpid()}.1.tmp"  # this process may be writing it now
    own.write_bytes(b"")
    assert await store.list() == [blob_id] and await store.get_root() is None
    assert store.remove_stale_temporaries_sync() == 2
    assert not stale.exists() and not stale_root.exists() and own.exists()
    assert await store.get(blob_id) == DATA


def test_fsync_dir_of_a_failing_directory_raises_os_error(tmp_path: Path, disk: DiskFaults) -> None:
    disk.arm("fsync", errno.EIO, lambda path: path == str(tmp_path))
    with pytest.raises(OSError):
        fsync_dir(tmp_path)
    assert disk.injected["fsync:EIO"] == 1
