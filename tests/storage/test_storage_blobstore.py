"""LocalBlobStore: content addressing, verification on read, and the compare-and-set root."""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from s5vec.storage import (
    BlobCorrupt, BlobId, BlobNotFound, BlobStore, LocalBlobStore, RootConflict, StorageError,
)

DATA = b"the quick brown fox jumps over the lazy dog" * 50


@pytest.fixture(params=["default-executor", "thread-pool"])
def executor(request):
    if request.param == "default-executor":
        yield None
        return
    pool = ThreadPoolExecutor(max_workers=4)
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def store(tmp_path, executor) -> LocalBlobStore:
    return LocalBlobStore(tmp_path, executor)


def _blob_file(root: Path, blob_id: BlobId) -> Path:
    (path,) = root.rglob(blob_id.base32())
    return path


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_local_blob_store_satisfies_the_blob_store_protocol(tmp_path):
    store: BlobStore = LocalBlobStore(tmp_path)
    for name in ("put", "get", "has", "delete", "list", "get_root", "set_root"):
        assert inspect.iscoroutinefunction(getattr(store, name)), name


async def test_put_returns_the_content_address_and_get_returns_the_same_bytes(store):
    blob_id = await store.put(DATA)
    assert blob_id == BlobId.of(DATA)
    assert await store.get(blob_id) == DATA
    assert await store.has(blob_id)


async def test_empty_blob_can_be_stored_and_read(store):
    blob_id = await store.put(b"")
    assert blob_id.size == 0
    assert await store.get(blob_id) == b""


async def test_get_of_a_blob_with_a_flipped_byte_on_disk_raises_blob_corrupt(store, tmp_path):
    blob_id = await store.put(DATA)
    path = _blob_file(tmp_path, blob_id)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupt):
        await store.get(blob_id)


@pytest.mark.parametrize("keep", [0, 1, len(DATA) - 1])
async def test_get_of_a_truncated_blob_raises_blob_corrupt(store, tmp_path, keep):
    blob_id = await store.put(DATA)
    path = _blob_file(tmp_path, blob_id)
    path.write_bytes(DATA[:keep])
    with pytest.raises(BlobCorrupt):
        await store.get(blob_id)


async def test_get_of_a_blob_with_extra_bytes_appended_raises_blob_corrupt(store, tmp_path):
    blob_id = await store.put(DATA)
    path = _blob_file(tmp_path, blob_id)
    path.write_bytes(DATA + b"!")
    with pytest.raises(BlobCorrupt):
        await store.get(blob_id)


async def test_get_of_a_missing_blob_raises_blob_not_found(store):
    missing = BlobId.of(b"never stored")
    with pytest.raises(BlobNotFound):
        await store.get(missing)
    assert not await store.has(missing)
    assert issubclass(BlobNotFound, StorageError) and issubclass(BlobCorrupt, StorageError)


async def test_get_with_the_right_hash_but_wrong_size_does_not_return_the_blob(store):
    blob_id = await store.put(DATA)
    with pytest.raises((BlobNotFound, BlobCorrupt)):
        await store.get(BlobId(hash=blob_id.hash, size=blob_id.size + 1))


async def test_put_twice_is_idempotent(store, tmp_path):
    first = await store.put(DATA)
    files = _all_files(tmp_path)
    second = await store.put(DATA)
    assert first == second
    assert _all_files(tmp_path) == files
    assert await store.list() == [first]
    assert await store.get(first) == DATA


async def test_concurrent_puts_of_the_same_bytes_store_one_blob(store, tmp_path):
    ids = await asyncio.gather(*(store.put(DATA) for _ in range(16)))
    assert set(ids) == {BlobId.of(DATA)}
    assert _all_files(tmp_path) == [_blob_file(tmp_path, ids[0])]
    assert await store.get(ids[0]) == DATA


async def test_put_repairs_a_truncated_copy_of_the_same_blob(store, tmp_path):
    blob_id = await store.put(DATA)
    _blob_file(tmp_path, blob_id).write_bytes(DATA[:10])
    assert await store.put(DATA) == blob_id
    assert await store.get(blob_id) == DATA


async def test_put_repairs_a_corrupt_copy_of_the_same_size(store, tmp_path):
    blob_id = await store.put(DATA)
    path = _blob_file(tmp_path, blob_id)
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert await store.put(DATA) == blob_id
    assert await store.get(blob_id) == DATA


async def test_put_leaves_no_temporary_files_behind(store, tmp_path):
    ids = [await store.put(DATA + bytes([i])) for i in range(20)]
    await store.set_root(ids[0], None)
    expected = sorted([_blob_file(tmp_path, i) for i in ids] + [tmp_path / "ROOT"])
    assert _all_files(tmp_path) == expected
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


async def test_list_returns_every_stored_blob_and_delete_removes_one(store):
    ids = {await store.put(bytes([i]) * (i + 1)) for i in range(10)}
    assert set(await store.list()) == ids
    victim = next(iter(ids))
    await store.delete(victim)
    assert set(await store.list()) == ids - {victim}
    assert not await store.has(victim)
    with pytest.raises(BlobNotFound):
        await store.get(victim)
    await store.delete(victim)  # deleting a missing blob is not an error


async def test_list_ignores_stray_files_in_the_blob_directory(store, tmp_path):
    blob_id = await store.put(DATA)
    stray = tmp_path / "blobs" / "zz"
    stray.mkdir(exist_ok=True)
    (stray / "bogus-name").write_bytes(b"x")
    (stray / ".btmp.123.tmp").write_bytes(b"x")
    assert await store.list() == [blob_id]


async def test_root_is_none_until_it_is_first_set(store):
    assert await store.get_root() is None
    blob_id = await store.put(DATA)
    await store.set_root(blob_id, None)
    assert await store.get_root() == blob_id


async def test_set_root_with_the_current_root_as_expected_swings_the_root(store):
    a, b = await store.put(b"a"), await store.put(b"b")
    await store.set_root(a, None)
    await store.set_root(b, a)
    assert await store.get_root() == b


@pytest.mark.parametrize("stale", ["none", "older", "unrelated"])
async def test_set_root_with_a_wrong_expected_raises_root_conflict_and_keeps_the_root(store, stale):
    a, b, c = await store.put(b"a"), await store.put(b"b"), await store.put(b"c")
    await store.set_root(a, None)
    await store.set_root(b, a)
    expected = {"none": None, "older": a, "unrelated": BlobId.of(b"unrelated")}[stale]
    with pytest.raises(RootConflict):
        await store.set_root(c, expected)
    assert await store.get_root() == b


async def test_set_root_on_an_empty_store_with_an_expected_root_raises_root_conflict(store):
    a = await store.put(b"a")
    with pytest.raises(RootConflict):
        await store.set_root(a, a)
    assert await store.get_root() is None


async def test_concurrent_set_root_from_the_same_expected_lets_exactly_one_win(store):
    base = await store.put(b"base")
    await store.set_root(base, None)
    candidates = [await store.put(bytes([i])) for i in range(8)]
    results = await asyncio.gather(*(store.set_root(c, base) for c in candidates), return_exceptions=True)
    winners = [c for c, r in zip(candidates, results) if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, RootConflict) for r in results if r is not None)
    assert await store.get_root() == winners[0]


async def test_root_and_blobs_survive_a_new_store_on_the_same_directory(tmp_path, executor):
    first = LocalBlobStore(tmp_path, executor)
    blob_id = await first.put(DATA)
    await first.set_root(blob_id, None)
    second = LocalBlobStore(tmp_path, executor)
    assert await second.get_root() == blob_id
    assert await second.get(blob_id) == DATA
    with pytest.raises(RootConflict):
        await second.set_root(BlobId.of(b"other"), None)


async def test_get_root_of_a_garbled_root_file_raises_blob_corrupt(store, tmp_path):
    (tmp_path / "ROOT").write_text("not a blob id\n")
    with pytest.raises(BlobCorrupt):
        await store.get_root()
