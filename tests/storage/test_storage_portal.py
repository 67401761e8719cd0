"""PortalBlobStore against the in-process portal double, and the double's own rules.

This module also holds the remote-store harness and the BlobStore contract (the behaviour
LocalBlobStore has) that test_storage_bridge.py imports: a tests/storage/conftest.py would
shadow the ``conftest`` module that other tests import ``SHARED`` from.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from nacl.signing import SigningKey
from s5vec.storage import (
    BackendUnavailable,
    BlobCorrupt,
    BlobId,
    BlobNotFound,
    RootConflict,
)
from s5vec.storage.bridge import BridgeBlobStore
from s5vec.storage.portal import PortalBlobStore, RemoteBlobStore, S5Keys, legacy_cid
from s5vec.storage.s5.registry import (
    RegistryEntry,
    b64url,
    b64url_decode,
    pointer_data,
    public_key_of,
    sign_challenge,
    sign_entry,
    signed_message,
)
from s5vec.storage.s5.seed import Identity, generate_phrase
from s5vec.testing.portal import (
    FAULTS,
    PORTAL,
    create_test_bridge,
    create_test_portal,
)

DATA = b"the quick brown fox jumps over the lazy dog" * 50
FAST = {"backoff": 0.001, "max_backoff": 0.01, "timeout": 10.0, "connect_timeout": 2.0}


@pytest.fixture
def identity() -> Identity:
    return Identity.from_phrase(generate_phrase())


@pytest.fixture
async def portal(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(create_test_portal())
    return server


@dataclass
class Harness:
    """One remote store of a kind, and a way to open more on the same backend."""

    kind: str
    server: TestServer
    identity: Identity
    tmp: Path
    opened: list[RemoteBlobStore] = field(default_factory=list)
    store: Any = None

    @property
    def app(self) -> web.Application:
        return self.server.app

    @property
    def encrypted(self) -> bool:
        return self.kind in ("portal", "bridge-encrypted")

    async def open_store(self, cache: str, **kwargs: Any) -> Any:
        url = str(self.server.make_url("/"))
        options = {**FAST, **kwargs}
        store: RemoteBlobStore
        if self.kind.startswith("portal"):
            store = PortalBlobStore(url, self.identity, cache_dir=self.tmp / cache,
                                    encrypt=self.encrypted, **options)
        else:
            store = BridgeBlobStore(url, self.identity if self.encrypted else None,
                                    cache_dir=self.tmp / cache, **options)
        await store.open()
        self.opened.append(store)
        return store


@pytest.fixture
async def make_harness(aiohttp_server: Any, tmp_path: Path,
                       identity: Identity) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    harnesses: list[Harness] = []

    async def make(kind: str, **app_options: Any) -> Harness:
        if kind.startswith("portal"):
            app = create_test_portal(**app_options)
        else:
            app = create_test_bridge(list_shape="entries" if kind == "bridge-entries" else "names", **app_options)
        harness = Harness(kind, await aiohttp_server(app), identity, tmp_path / f"h{len(harnesses)}")
        harnesses.append(harness)
        harness.store = await harness.open_store("cache")
        return harness

    yield make
    for harness in harnesses:
        for store in harness.opened:
            await store.close()


# -- the contract -------------------------------------------------------------------------

async def remote_store_satisfies_the_blob_store_protocol(h: Harness) -> None:
    for name in ("put", "get", "has", "delete", "list", "get_root", "set_root"):
        assert inspect.iscoroutinefunction(getattr(h.store, name)), name


async def put_then_get_returns_the_same_bytes(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    assert (blob_id == BlobId.of(DATA)) is not h.encrypted
    assert await h.store.get(blob_id) == DATA
    assert await h.store.has(blob_id)


async def empty_blob_can_be_stored_and_read(h: Harness) -> None:
    blob_id = await h.store.put(b"")
    assert await h.store.get(blob_id) == b""


async def get_of_a_missing_blob_raises_blob_not_found(h: Harness) -> None:
    missing = BlobId.of(b"never stored")
    with pytest.raises(BlobNotFound):
        await h.store.get(missing)
    assert not await h.store.has(missing)


async def get_with_the_right_hash_but_wrong_size_does_not_return_the_blob(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    with pytest.raises((BlobNotFound, BlobCorrupt)):
        await h.store.get(BlobId(hash=blob_id.hash, size=blob_id.size + 1))


async def put_twice_is_idempotent(h: Harness) -> None:
    first = await h.store.put(DATA)
    assert await h.store.put(DATA) == first
    assert await h.store.list() == [first]


async def concurrent_puts_of_the_same_bytes_store_one_blob(h: Harness) -> None:
    ids = await asyncio.gather(*(h.store.put(DATA) for _ in range(8)))
    assert len(set(ids)) == 1
    assert await h.store.list() == [ids[0]]
    assert await h.store.get(ids[0]) == DATA


async def list_returns_every_stored_blob_and_delete_removes_one(h: Harness) -> None:
    ids = {await h.store.put(bytes([i]) * (i + 1)) for i in range(6)}
    assert set(await h.store.list()) == ids
    victim = next(iter(ids))
    await h.store.delete(victim)
    assert set(await h.store.list()) == ids - {victim}
    assert not await h.store.has(victim)
    with pytest.raises(BlobNotFound):
        await h.store.get(victim)
    await h.store.delete(victim)  # deleting a missing blob is not an error


async def root_is_none_until_it_is_first_set(h: Harness) -> None:
    assert await h.store.get_root() is None
    blob_id = await h.store.put(DATA)
    await h.store.set_root(blob_id, None)
    assert await h.store.get_root() == blob_id


async def set_root_with_the_current_root_as_expected_swings_the_root(h: Harness) -> None:
    a, b = await h.store.put(b"a"), await h.store.put(b"b")
    await h.store.set_root(a, None)
    await h.store.set_root(b, a)
    assert await h.store.get_root() == b


async def set_root_with_a_wrong_expected_raises_root_conflict_and_keeps_the_root(h: Harness) -> None:
    a, b, c = await h.store.put(b"a"), await h.store.put(b"b"), await h.store.put(b"c")
    await h.store.set_root(a, None)
    await h.store.set_root(b, a)
    for stale in (None, a, BlobId.of(b"unrelated")):
        with pytest.raises(RootConflict):
            await h.store.set_root(c, stale)
    assert await h.store.get_root() == b


async def set_root_on_an_empty_store_with_an_expected_root_raises_root_conflict(h: Harness) -> None:
    a = await h.store.put(b"a")
    with pytest.raises(RootConflict):
        await h.store.set_root(a, a)
    assert await h.store.get_root() is None


async def concurrent_set_root_from_the_same_expected_lets_exactly_one_win(h: Harness) -> None:
    base = await h.store.put(b"base")
    await h.store.set_root(base, None)
    candidates = [await h.store.put(bytes([i])) for i in range(6)]
    results = await asyncio.gather(*(h.store.set_root(c, base) for c in candidates), return_exceptions=True)
    winners = [c for c, r in zip(candidates, results) if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, RootConflict) for r in results if r is not None)
    assert await h.store.get_root() == winners[0]


async def a_new_store_with_an_empty_cache_reads_the_root_and_every_blob(h: Harness) -> None:
    ids = [await h.store.put(DATA + bytes([i])) for i in range(3)]
    await h.store.set_root(ids[-1], None)
    fresh = await h.open_store("fresh-cache")
    assert await fresh.get_root() == ids[-1]
    assert [await fresh.get(i) for i in ids] == [DATA + bytes([i]) for i in range(3)]
    with pytest.raises(RootConflict):
        await fresh.set_root(BlobId.of(b"other"), None)


async def a_damaged_cached_copy_is_fetched_again(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    (path,) = (h.tmp / "cache").rglob(blob_id.base32())
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert await h.store.get(blob_id) == DATA
    assert path.read_bytes() != bytes(raw)  # the cache was repaired


async def a_large_blob_round_trips(h: Harness) -> None:
    data = bytes(range(256)) * 1200  # 300 KiB: sealing and hashing run in the executor
    blob_id = await h.store.put(data)
    fresh = await h.open_store("large-cache")
    assert await fresh.get(blob_id) == data


CONTRACT: list[Callable[[Harness], Awaitable[None]]] = [
    remote_store_satisfies_the_blob_store_protocol,
    put_then_get_returns_the_same_bytes,
    empty_blob_can_be_stored_and_read,
    get_of_a_missing_blob_raises_blob_not_found,
    get_with_the_right_hash_but_wrong_size_does_not_return_the_blob,
    put_twice_is_idempotent,
    concurrent_puts_of_the_same_bytes_store_one_blob,
    list_returns_every_stored_blob_and_delete_removes_one,
    root_is_none_until_it_is_first_set,
    set_root_with_the_current_root_as_expected_swings_the_root,
    set_root_with_a_wrong_expected_raises_root_conflict_and_keeps_the_root,
    set_root_on_an_empty_store_with_an_expected_root_raises_root_conflict,
    concurrent_set_root_from_the_same_expected_lets_exactly_one_win,
    a_new_store_with_an_empty_cache_reads_the_root_and_every_blob,
    a_damaged_cached_copy_is_fetched_again,
    a_large_blob_round_trips,
]
CONTRACT_IDS: list[str] = [check.__name__ for check in CONTRACT]


@pytest.mark.parametrize("check", CONTRACT, ids=CONTRACT_IDS)
@pytest.mark.parametrize("kind", ["portal", "portal-unencrypted"])
async def test_portal_store_meets_the_blob_store_contract(make_harness: Any, kind: str, check: Any) -> None:
    await check(await make_harness(kind))


@pytest.fixture
async def h(make_harness: Any) -> Harness:
    harness: Harness = await make_harness("portal")
    return harness


def _state(h: Harness) -> Any:
    return h.app[PORTAL]


def _faults(h: Harness) -> Any:
    return h.app[FAULTS]


def _secrets(h: Harness) -> list[str]:
    keys = S5Keys.from_identity(h.identity)
    found = [*_state(h).tokens]
    for key in (keys.encryption_key, keys.registry_seed, keys.account_key, h.identity.seed):
        assert key is not None
        found += [key.hex(), b64url(key), repr(key)]
    return found


# -- encryption, integrity, caching ---------------------------------------------------------

async def test_uploaded_bytes_are_encrypted_and_do_not_contain_the_plaintext(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    stored = _state(h).blobs[blob_id.hash]
    assert stored[:2] == b"\x8d\x01"
    assert DATA[:32] not in stored
    assert BlobId.of(stored) == blob_id


async def test_reading_a_just_written_blob_does_not_touch_the_network(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    _faults(h).requests.clear()
    assert await h.store.get(blob_id) == DATA
    assert await h.store.has(blob_id)
    assert _faults(h).requests == []


async def test_a_corrupted_download_is_fetched_again_and_never_returned(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    fresh = await h.open_store("fresh")
    _faults(h).corrupt_downloads = 1
    assert await fresh.get(blob_id) == DATA
    assert fresh.stats["errors"]["get"] == 1


async def test_a_download_corrupted_twice_raises_blob_corrupt_and_caches_nothing(h: Harness) -> None:
    blob_id = await h.store.put(DATA)
    fresh = await h.open_store("fresh")
    _faults(h).corrupt_downloads = 2
    with pytest.raises(BlobCorrupt):
        await fresh.get(blob_id)
    assert not list((h.tmp / "fresh").rglob(blob_id.base32()))
    assert await fresh.get(blob_id) == DATA


async def test_a_wrong_cid_from_upload_raises_blob_corrupt_and_lists_nothing(h: Harness) -> None:
    _faults(h).wrong_cid_uploads = 1
    with pytest.raises(BlobCorrupt, match="stored the upload"):
        await h.store.put(DATA)
    assert await h.store.list() == []


async def test_upload_over_the_size_limit_raises_backend_unavailable(make_harness: Any) -> None:
    h = await make_harness("portal", max_upload_bytes=10_000)
    with pytest.raises(BackendUnavailable, match="413"):
        await h.store.put(os.urandom(20_000))


async def test_the_journal_keeps_list_across_a_new_store_on_the_same_cache_dir(h: Harness) -> None:
    a, b = await h.store.put(b"a"), await h.store.put(b"b")
    await h.store.delete(a)
    again = await h.open_store("cache")
    assert await again.list() == [b]
    assert (h.tmp / "cache" / "journal").read_text().count("\n") == 1  # compacted on open


async def test_delete_tolerates_a_portal_with_unpinning_disabled(make_harness: Any) -> None:
    h = await make_harness("portal", allow_delete=False)
    blob_id = await h.store.put(DATA)
    await h.store.delete(blob_id)
    assert await h.store.list() == []


# -- retries and failures -----------------------------------------------------------------

async def test_503s_are_retried_with_backoff_and_then_succeed(h: Harness) -> None:
    await h.store.put(b"log in first")
    _faults(h).fail_next = 2
    blob_id = await h.store.put(DATA)
    assert h.store.stats["retries"]["put"] == 2
    assert BlobId.of(_state(h).blobs[blob_id.hash]) == blob_id


async def test_429_and_a_dropped_connection_are_retried(h: Harness) -> None:
    fresh = await h.open_store("fresh")
    blob_id = await h.store.put(DATA)
    _faults(h).fail_status, _faults(h).fail_next, _faults(h).drop_next = 429, 1, 1
    assert await fresh.get(blob_id) == DATA
    assert (_faults(h).fail_next, _faults(h).drop_next) == (0, 0)
    assert fresh.stats["retries"]["get"] >= 1  # aiohttp itself may retry the dropped GET once


async def test_persistent_503s_raise_backend_unavailable_after_the_retries(h: Harness) -> None:
    _faults(h).fail_next = 100
    with pytest.raises(BackendUnavailable, match=r"HTTP 503 \(after 5 attempts\)"):
        await h.store.get_root()
    assert h.store.stats["retries"]["get_root"] == 4


async def test_a_down_portal_raises_backend_unavailable_quickly(tmp_path: Path, identity: Identity) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{port}"
        async with PortalBlobStore(url, identity, cache_dir=tmp_path, retries=2, **FAST) as store:
            async with asyncio.timeout(5):
                with pytest.raises(BackendUnavailable) as caught:
                    await store.get_root()
                assert not await store.ping()
    assert url in str(caught.value) and "get_root" in str(caught.value)
    assert store.stats["requests"]["get_root"] == 3


async def test_a_slow_portal_times_out_into_backend_unavailable(h: Harness) -> None:
    slow = await h.open_store("slow", timeout=0.2, retries=1)
    _faults(h).latency = 2.0
    async with asyncio.timeout(5):
        with pytest.raises(BackendUnavailable, match="timed out"):
            await slow.get_root()


async def test_ping_reports_a_reachable_portal(h: Harness) -> None:
    assert await h.store.ping()


# -- the registry root ----------------------------------------------------------------------

async def test_two_stores_racing_set_root_let_exactly_one_win(h: Harness) -> None:
    other = await h.open_store("other")
    base = await h.store.put(b"base")
    await h.store.set_root(base, None)
    mine, theirs = await h.store.put(b"mine"), await other.put(b"theirs")
    for _ in range(5):
        results = await asyncio.gather(h.store.set_root(mine, base), other.set_root(theirs, base),
                                       return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["NoneType", "RootConflict"]
        winner = mine if results[0] is None else theirs
        assert await other.get_root() == winner
        await h.store.set_root(base, winner)


async def test_revision_too_low_as_a_500_is_a_conflict_not_a_retried_outage(make_harness: Any) -> None:
    h = await make_harness("portal", registry_error_status=500)
    other = await h.open_store("other")
    base = await h.store.put(b"base")
    await h.store.set_root(base, None)
    results = await asyncio.gather(h.store.set_root(await h.store.put(b"x"), base),
                                   other.set_root(await other.put(b"y"), base), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "RootConflict"]


async def test_set_root_whose_reply_was_lost_succeeds_when_retried(h: Harness) -> None:
    a = await h.store.put(b"a")
    _faults(h).drop_replies = 1
    _faults(h).target = "POST /s5/registry"
    await h.store.set_root(a, None)
    assert await h.store.get_root() == a
    assert _faults(h).requests.count("POST /s5/registry") == 2  # the retry met "Revision number too low"
    entry = next(iter(_state(h).registry.values()))
    assert entry.revision == 0


async def test_set_root_writes_a_signed_entry_with_a_rising_revision(h: Harness) -> None:
    a, b = await h.store.put(b"a"), await h.store.put(b"b")
    await h.store.set_root(a, None)
    await h.store.set_root(b, a)
    pk = public_key_of(h.identity.root_registry_seed())
    entry = _state(h).registry[pk]
    assert entry.verify() and entry.revision == 1 and entry.data == pointer_data(b)


async def test_a_forged_registry_entry_is_rejected_by_the_client(h: Harness) -> None:
    a = await h.store.put(b"a")
    await h.store.set_root(a, None)
    pk = public_key_of(h.identity.root_registry_seed())
    real = _state(h).registry[pk]
    evil = pointer_data(BlobId.of(b"evil"))
    _state(h).registry[pk] = RegistryEntry(pk, real.revision + 1, evil, real.signature)
    with pytest.raises(BlobCorrupt, match="signature"):
        await h.store.get_root()
    other = sign_entry(os.urandom(32), real.revision + 1, evil)  # validly signed, by another key
    _state(h).registry[pk] = other
    with pytest.raises(BlobCorrupt):
        await h.store.get_root()
    with pytest.raises(BlobCorrupt):
        await h.store.set_root(BlobId.of(b"x"), a)


# -- auth -------------------------------------------------------------------------------------

async def test_the_store_logs_in_through_the_challenge_flow(h: Harness) -> None:
    await h.store.put(DATA)
    keys = S5Keys.from_identity(h.identity)
    assert keys.account_key is not None
    assert _state(h).accounts == {public_key_of(keys.account_key)}
    assert len(_state(h).tokens) == 1


async def test_a_second_store_with_the_same_identity_logs_in_to_the_existing_account(h: Harness) -> None:
    await h.store.put(b"first")
    other = await h.open_store("other")
    await other.put(b"second")
    assert len(_state(h).accounts) == 1 and len(_state(h).tokens) == 2


async def test_a_rejected_token_makes_the_store_log_in_again_once(h: Harness) -> None:
    stale = await h.open_store("stale", auth_token="not-a-token")
    await stale.put(DATA)
    assert len(_state(h).tokens) == 1


async def test_a_store_without_account_key_or_token_gets_backend_unavailable(h: Harness) -> None:
    keys = S5Keys.from_identity(h.identity)
    no_account = S5Keys(keys.encryption_key, keys.registry_seed, None)
    async with PortalBlobStore(str(h.server.make_url("/")), no_account, cache_dir=h.tmp / "x", **FAST) as store:
        with pytest.raises(BackendUnavailable, match="401"):
            await store.put(DATA)


async def test_tokens_and_keys_never_appear_in_errors_logs_or_repr(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await h.store.put(DATA)
    errors: list[Exception] = []
    _faults(h).fail_next = 100
    for call in (h.store.put(b"x"), h.store.get_root(), h.store.set_root(BlobId.of(b"y"), None)):
        try:
            await call
        except Exception as exc:  # noqa: BLE001 - collecting every failure is the point
            errors.append(exc)
    _faults(h).fail_next = 0
    _faults(h).wrong_cid_uploads = 1
    with pytest.raises(BlobCorrupt) as corrupt:
        await h.store.put(b"z")
    text = " ".join([*map(str, errors), *map(repr, errors), str(corrupt.value), repr(h.store),
                     repr(S5Keys.from_identity(h.identity)), repr(h.identity), caplog.text])
    assert len(errors) == 3
    for secret in _secrets(h):
        assert secret not in text


# -- the portal double --------------------------------------------------------------------------

@pytest.fixture
async def raw(portal: Any) -> Any:
    async with aiohttp.ClientSession(base_url=portal.make_url("/")) as session:
        yield session


@pytest.fixture
def host(portal: Any) -> str:
    """``host:port`` of the portal double, as its login challenges must be signed."""
    return str(portal.make_url("/").host_port_subcomponent)


async def _login(raw: aiohttp.ClientSession, host: str, seed: bytes, kind: str = "register") -> str:
    pub = b64url(public_key_of(seed))
    async with raw.get(f"/s5/account/{kind}", params={"pubKey": pub}) as resp:
        challenge = (await resp.json())["challenge"]
    response, signature = sign_challenge(seed, 1 if kind == "register" else 2, b64url_decode(challenge), host)
    async with raw.post(f"/s5/account/{kind}", json={
            "pubKey": pub, "response": b64url(response), "signature": b64url(signature)}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.cookies["s5-auth-token"].value == (await resp.json())["authToken"]
        return str((await resp.json())["authToken"])


async def _post_entry(raw: aiohttp.ClientSession, token: str, entry: dict[str, Any]) -> tuple[int, str]:
    async with raw.post("/s5/registry", json=entry, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.text()


async def test_test_portal_requires_a_token_for_uploads_registry_writes_and_deletes(raw: Any) -> None:
    entry = sign_entry(os.urandom(32), 0, b"x").to_json()
    for method, path, kwargs in (("POST", "/s5/upload", {"data": b"x"}), ("POST", "/s5/registry", {"json": entry}),
                                 ("DELETE", f"/s5/delete/{legacy_cid(BlobId.of(b'x'))}", {})):
        async with raw.request(method, path, **kwargs) as resp:
            assert resp.status == 401, path


async def test_test_portal_accepts_the_token_as_header_cookie_or_query(raw: Any, host: str) -> None:
    token = await _login(raw, host, os.urandom(32))
    for kwargs in ({"headers": {"Authorization": f"Bearer {token}"}}, {"cookies": {"s5-auth-token": token}},
                   {"params": {"auth_token": token}}):
        async with raw.post("/s5/upload", data=b"hello", **kwargs) as resp:
            assert resp.status == 200


async def test_test_portal_upload_returns_the_legacy_cid_for_raw_and_multipart_bodies(raw: Any, host: str) -> None:
    token = await _login(raw, host, os.urandom(32))
    headers = {"Authorization": f"Bearer {token}"}
    form = aiohttp.FormData()
    form.add_field("file", b"hello", filename="f")
    for body in (b"hello", form):
        async with raw.post("/s5/upload", data=body, headers=headers) as resp:
            assert (await resp.json())["cid"] == legacy_cid(BlobId.of(b"hello"))


async def test_test_portal_download_accepts_only_the_legacy_cid_and_blob_redirects(raw: Any, host: str) -> None:
    token = await _login(raw, host, os.urandom(32))
    async with raw.post("/s5/upload", data=b"hello", params={"auth_token": token}):
        pass
    blob_id = BlobId.of(b"hello")
    async with raw.get(f"/s5/download/{blob_id.base58()}") as resp:
        assert resp.status == 400
    async with raw.get(f"/s5/download/{legacy_cid(blob_id)}") as resp:
        assert await resp.read() == b"hello"
    async with raw.get(f"/s5/blob/{blob_id.base32()}", allow_redirects=False) as resp:
        assert resp.status == 307
    async with raw.get(f"/s5/blob/{blob_id.base58()}") as resp:
        assert await resp.read() == b"hello"
    async with raw.get(f"/s5/download/{legacy_cid(BlobId.of(b'other'))}") as resp:
        assert resp.status == 404


async def test_test_portal_registry_rejects_bad_signatures_low_revisions_and_long_data(
        raw: Any, host: str) -> None:
    token, seed = await _login(raw, host, os.urandom(32)), os.urandom(32)
    pk = b64url(public_key_of(seed))
    async with raw.get("/s5/registry", params={"pk": pk}) as resp:
        assert resp.status == 404
    assert await _post_entry(raw, token, sign_entry(seed, 5, b"five").to_json()) == (204, "")
    forged = {**sign_entry(seed, 6, b"six").to_json(), "data": b64url(b"xis")}
    assert await _post_entry(raw, token, forged) == (400, "Invalid signature found")
    for revision in (5, 4):
        assert await _post_entry(raw, token, sign_entry(seed, revision, b"low").to_json()) == (
            400, "Revision number too low")
    long = b"x" * 49
    signature = SigningKey(seed).sign(signed_message(6, long)).signature
    too_long = RegistryEntry(public_key_of(seed), 6, long, signature).to_json()
    assert await _post_entry(raw, token, too_long) == (400, "Data too long")
    async with raw.get("/s5/registry", params={"pk": pk}) as resp:
        assert RegistryEntry.from_json(await resp.json()) == sign_entry(seed, 5, b"five")


async def _answer(raw: Any, seed: bytes, challenge: str, host: str, kind: int = 1,
                  signer: bytes | None = None) -> tuple[int, str]:
    response, signature = sign_challenge(signer or seed, kind, b64url_decode(challenge), host)
    async with raw.post("/s5/account/register", json={
            "pubKey": b64url(public_key_of(seed)), "response": b64url(response),
            "signature": b64url(signature)}) as resp:
        return resp.status, await resp.text()


async def _challenge(raw: Any, seed: bytes) -> str:
    async with raw.get("/s5/account/register", params={"pubKey": b64url(public_key_of(seed))}) as resp:
        return str((await resp.json())["challenge"])


async def test_test_portal_login_rejects_a_wrong_host_a_reused_challenge_and_a_bad_signature(
        raw: Any, host: str) -> None:
    seed = os.urandom(32)
    status, text = await _answer(raw, seed, await _challenge(raw, seed), "evil.example")
    assert (status, "another portal host" in text) == (400, True)
    status, text = await _answer(raw, seed, await _challenge(raw, seed), host, kind=2)
    assert (status, "type" in text) == (400, True)
    status, text = await _answer(raw, seed, await _challenge(raw, seed), host, signer=os.urandom(32))
    assert (status, text) == (400, "Invalid signature")
    challenge = await _challenge(raw, seed)
    status, text = await _answer(raw, os.urandom(32), challenge, host)  # another key answers
    assert (status, "not issued to this key" in text) == (400, True)
    status, text = await _answer(raw, seed, challenge, host)
    assert (status, "already used" in text) == (400, True)
    challenge = await _challenge(raw, seed)
    assert (await _answer(raw, seed, challenge, host))[0] == 200
    assert (await _answer(raw, seed, challenge, host))[0] == 400  # single use
    assert "already registered" in (await _answer(raw, seed, await _challenge(raw, seed), host))[1]


async def test_test_portal_can_be_run_standalone(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "s5vec.testing.portal", "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(20):
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/s5/registry",
                                           params={"pk": b64url(public_key_of(bytes(32)))}) as resp:
                        assert resp.status == 404
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
    finally:
        proc.terminate()
        await proc.wait()


def test_portal_store_construction_validates_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="encryption key"):
        PortalBlobStore("http://127.0.0.1:1", S5Keys(), cache_dir=tmp_path)
    store = PortalBlobStore("http://user:pw@127.0.0.1:1/?auth_token=t", S5Keys(), cache_dir=tmp_path,
                            encrypt=False, auth_token="sekrit")
    assert "sekrit" not in repr(store) and "pw" not in repr(store)


async def test_root_conflict_message_names_both_pointers(h: Harness) -> None:
    a = await h.store.put(b"a")
    await h.store.set_root(a, None)
    with pytest.raises(RootConflict, match=str(a)):
        await h.store.set_root(a, None)
