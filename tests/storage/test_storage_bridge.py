"""BridgeBlobStore against the in-process bridge double, in both listing shapes."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import test_storage_portal as shared  # the harness and contract (see that module's docstring)
from s5vec.storage import BackendUnavailable, BlobCorrupt, BlobId
from s5vec.storage.bridge import BridgeBlobStore, listing_names
from s5vec.testing.portal import BRIDGE, FAULTS
from test_storage_portal import CONTRACT, CONTRACT_IDS, DATA, Harness

identity = shared.identity  # fixtures, re-bound so pytest finds them in this module too
make_harness = shared.make_harness


@pytest.mark.parametrize("check", CONTRACT, ids=CONTRACT_IDS)
@pytest.mark.parametrize("kind", ["bridge-names", "bridge-entries", "bridge-encrypted"])
async def test_bridge_store_meets_the_blob_store_contract(make_harness: Any, kind: str, check: Any) -> None:
    await check(await make_harness(kind))


@pytest.fixture(params=["bridge-names", "bridge-entries"])
async def h(make_harness: Any, request: pytest.FixtureRequest) -> Harness:
    return await make_harness(request.param)


async def test_blobs_and_root_live_under_the_s5vec_prefix(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    await h.store.set_root(blob_id, None)
    files = h.app[BRIDGE].files
    assert files == {f"s5vec/blobs/{blob_id.base32()}": DATA, "s5vec/ROOT": f"{blob_id}\n".encode()}


async def test_list_skips_names_that_are_not_blob_ids_and_subdirectories(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    h.app[BRIDGE].files["s5vec/blobs/README"] = b"x"
    h.app[BRIDGE].files["s5vec/blobs/old/" + blob_id.base32()] = b"x"
    assert await h.store.list() == [blob_id]


async def test_list_of_an_empty_bridge_is_empty(h: Harness) -> None:
    assert await h.store.list() == []


@pytest.mark.parametrize("body, names", [
    (["a", "b/"], ["a", "b"]),
    ({"entries": [{"name": "a", "type": "file", "size": 1}, {"name": "d", "type": "directory"}]}, ["a"]),
    ([{"name": "a", "type": "file"}], ["a"]),
    ({"unexpected": 1}, []),
    (None, []),
])
def test_listing_names_accepts_both_bridge_body_shapes(body: Any, names: list[str]) -> None:
    assert listing_names(body) == names


async def test_a_corrupted_download_is_fetched_again_and_twice_raises_blob_corrupt(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    fresh = await h.open_store("fresh")
    h.app[FAULTS].corrupt_downloads = 1
    assert await fresh.get(blob_id) == DATA
    other = await h.open_store("other")
    h.app[FAULTS].corrupt_downloads = 2
    with pytest.raises(BlobCorrupt):
        await other.get(blob_id)


async def test_bytes_swapped_on_the_bridge_are_never_returned(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    h.app[BRIDGE].files[f"s5vec/blobs/{blob_id.base32()}"] = b"something else"
    fresh = await h.open_store("fresh")
    with pytest.raises(BlobCorrupt):
        await fresh.get(blob_id)


async def test_an_encrypted_bridge_store_uploads_no_plaintext(make_harness: Any) -> None:
    h = await make_harness("bridge-encrypted")
    blob_id = await h.store.put(DATA)
    stored = h.app[BRIDGE].files[f"s5vec/blobs/{blob_id.base32()}"]
    assert stored[:2] == b"\x8d\x01" and DATA[:32] not in stored


async def test_503s_are_retried_and_then_persistent_ones_raise_backend_unavailable(h: Harness) -> None:
    h.app[FAULTS].fail_next = 2
    blob_id = await h.store.put(DATA)
    assert h.store.stats["retries"]["put"] == 2
    h.app[FAULTS].fail_next = 100
    fresh = await h.open_store("fresh", retries=1)
    with pytest.raises(BackendUnavailable, match="S5 bridge .* get failed: HTTP 503"):
        await fresh.get(blob_id)


async def test_ping_uses_the_health_endpoint(h: Harness) -> None:
    assert await h.store.ping()
    async with BridgeBlobStore("http://127.0.0.1:9", retries=0) as down:
        assert not await down.ping()


async def test_a_garbled_root_file_raises_blob_corrupt(h: Harness) -> None:
    h.app[BRIDGE].files["s5vec/ROOT"] = b"not a blob id"
    with pytest.raises(BlobCorrupt):
        await h.store.get_root()


async def test_a_bridge_store_without_a_cache_still_works(h: Harness) -> None:
    async with BridgeBlobStore(str(h.server.make_url("/"))) as store:
        blob_id = await store.put(DATA)
        assert await store.get(blob_id) == DATA
        assert blob_id == BlobId.of(DATA)


async def test_the_bridge_double_serves_head_delete_and_health(h: Harness) -> None:
    async with aiohttp.ClientSession(base_url=h.server.make_url("/")) as raw:
        async with raw.put("/s5/fs/a/b", data=b"x") as resp:
            assert resp.status == 201
        async with raw.head("/s5/fs/a/b") as resp:
            assert resp.status == 200
        async with raw.get("/s5/fs/a/") as resp:
            body = await resp.json()
            assert listing_names(body) == ["b"]
        async with raw.delete("/s5/fs/a/b") as resp:
            assert resp.status == 204
        async with raw.delete("/s5/fs/a/b") as resp:
            assert resp.status == 404
        async with raw.get("/health") as resp:
            assert resp.status == 200
