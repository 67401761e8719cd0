"""Blob stores on an S5 portal's HTTP API, and the HTTP/retry/cache machinery they share.

The portal holds encrypted blobs (public by hash) and one signed registry entry naming the
root; a local on-disk cache makes just-written blobs readable without the network. See S5.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import aiohttp
import base58
import blake3
from yarl import URL

from .blobid import BlobId
from .blobstore import LocalBlobStore, OpenClose, write_atomic
from .errors import (
    BackendUnavailable,
    BlobCorrupt,
    BlobNotFound,
    RootConflict,
    StorageError,
)
from .s5.crypto import decrypt_blob, encrypt_blob
from .s5.registry import (
    CHALLENGE_LOGIN,
    CHALLENGE_REGISTER,
    RegistryEntry,
    b64url,
    b64url_decode,
    blob_id_from_pointer,
    pointer_data,
    public_key_of,
    sign_challenge,
    sign_entry,
)
from .s5.seed import Identity, dhs

T = TypeVar("T")
logger = logging.getLogger(__name__)

AUTH_COOKIE: Final = "s5-auth-token"
REVISION_TOO_LOW: Final = "Revision number too low"
_REGISTRY_VERDICTS: Final = (REVISION_TOO_LOW, "Invalid signature", "Data too long")
_INLINE_CPU_BYTES: Final = 64 * 1024
_JOURNAL: Final = "journal"
_NONCE_CONTEXT: Final = b"s5vec blob nonce v1"
HEAD_KEY_CONTEXT: Final = b"s5vec wal head"


@dataclass(frozen=True, slots=True, repr=False)
class S5Keys:
    """The secrets a remote store uses; any may be None when unused. repr hides them."""

    encryption_key: bytes | None = None
    registry_seed: bytes | None = None
    account_key: bytes | None = None

    @classmethod
    def from_identity(cls, identity: Identity) -> S5Keys:
        return cls(encryption_key=identity.blob_encryption_key(),
                   registry_seed=identity.root_registry_seed(),
                   account_key=identity.account_key(identity.portal_account_seed()))

    @classmethod
    def of(cls, identity: Identity | S5Keys | None) -> S5Keys:
        """Keys from an identity, keys as given, or no keys for None."""
        if identity is None:
            return cls()
        return identity if isinstance(identity, S5Keys) else cls.from_identity(identity)

    def __repr__(self) -> str:
        return "S5Keys(***)"


@dataclass(frozen=True, slots=True)
class Reply:
    """A fully read HTTP response."""

    status: int
    body: bytes
    cookies: Mapping[str, str]

    @property
    def text(self) -> str:
        return self.body[:300].decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


def public_url(url: str | URL) -> str:
    """``url`` without user info, query or fragment: safe to put in messages."""
    parsed = URL(url)
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


class Http:
    """One pooled aiohttp session with bounded concurrency, retries and counters.

    Retries connection errors, timeouts, 5xx and 429 with exponential backoff and full
    jitter; returns every other status to the caller, except that a 401 on an
    authenticated request triggers ``relogin`` once. Never logs or raises the token.
    """

    def __init__(self, base_url: str, *, what: str, timeout: float = 60.0, connect_timeout: float = 10.0,
                 max_concurrency: int = 8, retries: int = 4, backoff: float = 0.25,
                 max_backoff: float = 8.0) -> None:
        if retries < 0 or max_concurrency < 1:
            raise ValueError("retries must be >= 0 and max_concurrency >= 1")
        self.base = URL(base_url.rstrip("/") + "/")
        self.url = public_url(base_url.rstrip("/"))
        self.what = what
        self.token: str | None = None
        self.relogin: Callable[[], Awaitable[None]] | None = None
        self.stats: dict[str, dict[str, int]] = {"requests": {}, "errors": {}, "retries": {}}
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._max_concurrency = max_concurrency
        self._sem = asyncio.Semaphore(max_concurrency)
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Http({self.url!r})"

    @property
    def host(self) -> str:
        """``host[:port]`` as sent in the Host header (what login challenges sign)."""
        return str(self.base.host_port_subcomponent)

    def count(self, kind: str, op: str) -> None:
        self.stats[kind][op] = self.stats[kind].get(op, 0) + 1

    async def open(self) -> None:
        if self._session is None:
            # No cookie jar: the token travels only in the header we set, never implicitly.
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(limit=self._max_concurrency))

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def unavailable(self, op: str, detail: str) -> BackendUnavailable:
        return BackendUnavailable(f"{self.what} {self.url}: {op} failed: {detail}")

    async def request(self, op: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      data: bytes | None = None, form_file: bytes | None = None, json_body: Any = None,
                      auth: bool = False, final: Callable[[Reply], bool] | None = None,
                      retries: int | None = None, timeout: float | None = None) -> Reply:
        """Send one request, retrying transient failures; ``final`` marks 5xx replies that
        must not be retried. Raises BackendUnavailable when attempts run out."""
        if self._session is None:
            raise StorageError(f"{self.what} client for {self.url} is not open (call open())")
        attempts = (self._retries if retries is None else retries) + 1
        relogged = False
        failures = 0
        while True:
            if auth and self.token is None and self.relogin is not None and not relogged:
                relogged = True
                await self.relogin()
            self.count("requests", op)
            try:
                reply = await self._send(method, path, params, data, form_file, json_body, auth, timeout)
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure = _describe(exc)
            else:
                if reply.status == 401 and auth and self.relogin is not None and not relogged:
                    relogged = True
                    self.token = None
                    await self.relogin()
                    continue
                if not _retryable(reply.status) or (final is not None and final(reply)):
                    return reply
                failure = f"HTTP {reply.status}"
            self.count("errors", op)
            failures += 1
            if failures >= attempts:
                raise self.unavailable(op, f"{failure} (after {failures} attempts)")
            self.count("retries", op)
            delay = random.uniform(0, min(self._max_backoff, self._backoff * 2 ** (failures - 1)))
            logger.debug("%s %s: %s %s failed (%s), retry in %.2fs",
                         self.what, self.url, op, method, failure, delay)
            await asyncio.sleep(delay)

    async def _send(self, method: str, path: str, params: Mapping[str, str] | None, data: bytes | None,
                    form_file: bytes | None, json_body: Any, auth: bool, timeout: float | None) -> Reply:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        body: Any = data
        if form_file is not None:  # a FormData is consumed by sending, so build one per attempt
            body = aiohttp.FormData()
            body.add_field("file", form_file, filename="blob", content_type="application/octet-stream")
        extra: dict[str, Any] = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(total=timeout)}
        async with self._sem, self._session.request(
                method, self.base.join(URL(path.lstrip("/"), encoded=True)), params=params, data=body,
                json=json_body, headers=headers, **extra) as resp:
            raw = await resp.read()
            return Reply(resp.status, raw, {k: m.value for k, m in resp.cookies.items()})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:200]


class Sealer:
    """Client-side encryption of blobs (or none), run off the event loop when large.

    With a key, the nonce is a keyed BLAKE3 of the plaintext (SIV-style): equal plaintexts
    give equal ciphertexts, so puts are idempotent and dedupe, and only this key's holder
    can link a ciphertext to a guessed plaintext.
    """

    def __init__(self, key: bytes | None, executor: Executor | None = None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("the blob encryption key must be 32 bytes")
        self._key = key
        self._nonce_key = None if key is None else blake3.blake3(_NONCE_CONTEXT, key=key).digest()
        self._executor = executor

    def __repr__(self) -> str:
        return f"Sealer(encrypt={self._key is not None})"

    @property
    def encrypts(self) -> bool:
        return self._key is not None

    async def run(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        if size < _INLINE_CPU_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def seal_sync(self, data: bytes) -> tuple[bytes, BlobId]:
        if self._key is None or self._nonce_key is None:
            return data, BlobId.of(data)
        nonce = blake3.blake3(data, key=self._nonce_key).digest(length=24)
        sealed = encrypt_blob(self._key, data, nonce=nonce)
        return sealed, BlobId.of(sealed)

    def open_sync(self, sealed: bytes) -> bytes:
        return sealed if self._key is None else decrypt_blob(self._key, sealed)

    async def seal(self, data: bytes) -> tuple[bytes, BlobId]:
        return await self.run(len(data), self.seal_sync, data)

    async def open(self, sealed: bytes) -> bytes:
        return await self.run(len(sealed), self.open_sync, sealed)

    async def hash(self, data: bytes) -> BlobId:
        return await self.run(len(data), BlobId.of, data)


class RemoteBlobStore(OpenClose):
    """What the portal and bridge stores share: lifecycle, sealing, the self-verifying read
    cache (sealed bytes under their own id) and verified downloads. Subclasses provide the
    transport in ``_upload``, ``_download``, ``_exists`` and ``_remove``."""

    def __init__(self, http: Http, sealer: Sealer, cache_dir: Path | None,
                 executor: Executor | None) -> None:
        self._http = http
        self._sealer = sealer
        self._executor = executor
        self._cache = None if cache_dir is None else LocalBlobStore(Path(cache_dir) / "cache", executor)
        self._root_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._http.url!r}, encrypt={self._sealer.encrypts})"

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """Counters by kind ("requests", "errors", "retries") and then by operation."""
        return self._http.stats

    async def open(self) -> None:
        await self._http.open()

    async def close(self) -> None:
        await self._http.close()

    async def _upload(self, sealed: bytes, blob_id: BlobId) -> None:
        raise NotImplementedError

    async def _download(self, blob_id: BlobId) -> bytes | None:
        raise NotImplementedError

    async def _exists(self, blob_id: BlobId) -> bool:
        raise NotImplementedError

    async def _remove(self, blob_id: BlobId) -> None:
        raise NotImplementedError

    async def _cached(self, blob_id: BlobId) -> bytes | None:
        if self._cache is None:
            return None
        try:
            return await self._cache.get(blob_id)
        except BlobNotFound:
            return None
        except BlobCorrupt:
            logger.warning("cached copy of blob %s is damaged; fetching it again", blob_id)
            await self._cache.delete(blob_id)
            return None

    async def put(self, data: bytes) -> BlobId:
        """Seal, upload, cache; returns the id of the uploaded (sealed) bytes.
        Raises BlobCorrupt if the remote names other bytes, BackendUnavailable."""
        sealed, blob_id = await self._sealer.seal(data)
        await self._upload(sealed, blob_id)
        if self._cache is not None:
            await self._cache.put(sealed)
        return blob_id

    async def get(self, blob_id: BlobId) -> bytes:
        """The plaintext of ``blob_id``: from the cache, else downloaded and re-hashed (a
        mismatch is fetched once more). Raises BlobNotFound, BlobCorrupt, BackendUnavailable."""
        sealed = await self._cached(blob_id)
        if sealed is None:
            sealed = await self._fetch_verified(blob_id)
            if self._cache is not None:
                await self._cache.put(sealed)
        return await self._sealer.open(sealed)

    async def _fetch_verified(self, blob_id: BlobId) -> bytes:
        for attempt in range(2):
            raw = await self._download(blob_id)
            if raw is None:
                raise BlobNotFound(f"blob {blob_id} is not stored at {self._http.url}")
            if len(raw) == blob_id.size and await self._sealer.hash(raw) == blob_id:
                return raw
            self._http.count("errors", "get")
            logger.warning("%s %s returned bytes that do not hash to blob %s (attempt %d)",
                           self._http.what, self._http.url, blob_id, attempt + 1)
        raise BlobCorrupt(f"{self._http.what} {self._http.url} returned bytes that do not match blob {blob_id}")

    async def has(self, blob_id: BlobId) -> bool:
        if self._cache is not None and await self._cache.has(blob_id):
            return True
        return await self._exists(blob_id)

    async def delete(self, blob_id: BlobId) -> None:
        await self._remove(blob_id)
        if self._cache is not None:
            await self._cache.delete(blob_id)


def legacy_cid(blob_id: BlobId) -> str:
    """The ``z`` form of the legacy raw CID, the only form ``/s5/download`` understands."""
    return "z" + base58.b58encode(blob_id.to_legacy_cid()).decode()


class _Journal:
    """Ids this store uploaded and has not deleted: append-only lines ``+id``/``-id``,
    fsynced; a torn last line is ignored; compacted when loaded. The in-memory set is only
    touched on the event loop; file work runs on the executor, one append at a time."""

    def __init__(self, path: Path, executor: Executor | None) -> None:
        self._path = path
        self._executor = executor
        self._ids: dict[BlobId, None] = {}
        self._lock = asyncio.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _load_sync(self) -> dict[BlobId, None]:
        ids: dict[BlobId, None] = {}
        try:
            lines = self._path.read_text().splitlines()
        except FileNotFoundError:
            return ids
        for line in lines:
            try:
                blob_id = BlobId.parse(line[1:])
            except ValueError:
                continue
            if line[0] == "+":
                ids[blob_id] = None
            elif line[0] == "-":
                ids.pop(blob_id, None)
        if len(lines) != len(ids):
            write_atomic(self._path, "".join(f"+{i}\n" for i in ids).encode())
        return ids

    def _append_sync(self, line: str) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    async def load(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        async with self._lock:
            self._ids = await self._run(self._load_sync)

    def __contains__(self, blob_id: BlobId) -> bool:
        return blob_id in self._ids

    def ids(self) -> list[BlobId]:
        return list(self._ids)

    async def record(self, blob_id: BlobId, present: bool) -> None:
        async with self._lock:
            if (blob_id in self._ids) == present:
                return
            await self._run(self._append_sync, f"{'+' if present else '-'}{blob_id}\n")
            if present:
                self._ids[blob_id] = None
            else:
                self._ids.pop(blob_id, None)


class PortalBlobStore(RemoteBlobStore):
    """BlobStore on an S5 portal: blobs via upload/download, the root as a signed registry
    entry, ``list()`` from a local journal of uploads (portals have no listing).

    Use ``async with`` (or open()/close()). Safe for concurrent use from one event loop.
    """

    def __init__(self, portal_url: str, identity: Identity | S5Keys, *, cache_dir: Path,
                 auth_token: str | None = None, encrypt: bool = True, timeout: float = 60.0,
                 connect_timeout: float = 10.0, max_concurrency: int = 8, retries: int = 4,
                 backoff: float = 0.25, max_backoff: float = 8.0, root_retries: int = 5,
                 executor: Executor | None = None) -> None:
        keys = S5Keys.of(identity)
        if encrypt and keys.encryption_key is None:
            raise ValueError("encrypt=True needs an encryption key")
        http = Http(portal_url, what="S5 portal", timeout=timeout, connect_timeout=connect_timeout,
                    max_concurrency=max_concurrency, retries=retries, backoff=backoff,
                    max_backoff=max_backoff)
        super().__init__(http, Sealer(keys.encryption_key if encrypt else None, executor),
                         cache_dir, executor)
        http.token = auth_token
        if keys.account_key is not None:
            http.relogin = self._login
        self._keys = keys
        self._root_retries = root_retries
        self._journal = _Journal(Path(cache_dir) / _JOURNAL, executor)
        self._registered = False
        self._login_lock = asyncio.Lock()
        self._login_round = 0
        self._head_lock = asyncio.Lock()
        self._head_known: RegistryEntry | None | Literal[False] = False  # head entry last read or written

    async def open(self) -> None:
        """Open the HTTP session and load the upload journal; no network traffic."""
        await self._journal.load()
        await super().open()

    async def ping(self) -> bool:
        """True if the portal answers a registry read (no retries, short timeout)."""
        try:
            pk = public_key_of(self._keys.registry_seed or bytes(32))
            reply = await self._http.request("ping", "GET", "s5/registry", params={"pk": b64url(pk)},
                                             retries=0, timeout=5.0)
        except StorageError:
            return False
        return reply.status in (200, 404)

    # -- auth ---------------------------------------------------------------------------

    async def _login(self) -> None:
        """Register the account key (or log in if the portal already knows it); keep the token."""
        round_seen = self._login_round
        async with self._login_lock:
            if self._login_round != round_seen and self._http.token is not None:
                return  # another task logged in while this one waited
            flows = [("register", CHALLENGE_REGISTER), ("login", CHALLENGE_LOGIN)]
            token = None
            for endpoint, kind in flows[::-1] if self._registered else flows:
                token = await self._challenge(endpoint, kind)
                if token is not None:
                    break
            if token is None:
                raise self._http.unavailable("login", "the portal refused both register and login")
            self._http.token = token
            self._registered = True
            self._login_round += 1

    async def _challenge(self, endpoint: str, kind: int) -> str | None:
        assert self._keys.account_key is not None
        pub = b64url(public_key_of(self._keys.account_key))
        path = f"s5/account/{endpoint}"
        reply = await self._http.request("login", "GET", path, params={"pubKey": pub})
        body = reply.json()
        if reply.status != 200 or not isinstance(body, dict) or "challenge" not in body:
            return None
        try:
            challenge = b64url_decode(body["challenge"])
            response, signature = sign_challenge(self._keys.account_key, kind, challenge, self._http.host)
        except ValueError:
            return None
        reply = await self._http.request("login", "POST", path, json_body={
            "pubKey": pub, "response": b64url(response), "signature": b64url(signature), "label": "s5vec"})
        body = reply.json()
        if reply.status != 200:
            logger.info("S5 portal %s: %s returned HTTP %d", self._http.url, endpoint, reply.status)
            return None
        token = body.get("authToken") if isinstance(body, dict) else None
        return token if isinstance(token, str) and token else reply.cookies.get(AUTH_COOKIE)

    # -- blobs --------------------------------------------------------------------------

    def _refused(self, op: str, reply: Reply) -> BackendUnavailable:
        return self._http.unavailable(op, f"HTTP {reply.status} {reply.text!r}")

    async def _upload(self, sealed: bytes, blob_id: BlobId) -> None:
        if blob_id in self._journal and self._cache is not None and await self._cache.has(blob_id):
            return  # uploaded before by this store: content addressing makes it a no-op
        reply = await self._http.request("put", "POST", "s5/upload", form_file=sealed, auth=True)
        if reply.status != 200:
            raise self._refused("upload", reply)
        body = reply.json()
        try:
            returned = BlobId.parse(body["cid"])
        except (TypeError, KeyError, ValueError):
            raise BlobCorrupt(f"S5 portal {self._http.url} answered an upload without a valid CID") from None
        if returned != blob_id:
            raise BlobCorrupt(f"S5 portal {self._http.url} stored the upload of blob {blob_id} as {returned}")
        await self._journal.record(blob_id, True)

    async def _download(self, blob_id: BlobId) -> bytes | None:
        reply = await self._http.request("get", "GET", f"s5/download/{legacy_cid(blob_id)}")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise self._refused("download", reply)
        return reply.body

    async def _exists(self, blob_id: BlobId) -> bool:
        reply = await self._http.request("has", "HEAD", f"s5/download/{legacy_cid(blob_id)}")
        if reply.status in (200, 404):
            return reply.status == 200
        if reply.status == 405:  # a portal without HEAD: fetch and verify instead
            try:
                await self._fetch_verified(blob_id)
            except (BlobNotFound, BlobCorrupt):
                return False
            return True
        raise self._refused("has", reply)

    async def _remove(self, blob_id: BlobId) -> None:
        reply = await self._http.request("delete", "DELETE", f"s5/delete/{legacy_cid(blob_id)}", auth=True)
        # 404: already gone; 405: the portal has unpinning disabled, the bytes stay public.
        if reply.status >= 300 and reply.status not in (404, 405):
            raise self._refused("delete", reply)
        await self._journal.record(blob_id, False)

    async def list(self) -> list[BlobId]:
        """Ids put through this cache directory and not deleted (the portal cannot list)."""
        return self._journal.ids()

    # -- root ---------------------------------------------------------------------------

    def _registry_key(self) -> bytes:
        if self._keys.registry_seed is None:
            raise StorageError("this portal store has no registry key, so it has no root pointer")
        return self._keys.registry_seed

    async def _read_entry(self, op: str, seed: bytes | None = None) -> RegistryEntry | None:
        pk = public_key_of(seed or self._registry_key())
        reply = await self._http.request(op, "GET", "s5/registry", params={"pk": b64url(pk)})
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise self._refused(op, reply)
        try:
            entry = RegistryEntry.from_json(reply.json())
        except ValueError as exc:
            raise BlobCorrupt(f"S5 portal {self._http.url} returned a malformed registry entry: {exc}") from None
        if entry.public_key != pk or not entry.verify():
            raise BlobCorrupt(f"S5 portal {self._http.url} returned a root registry entry with a bad signature")
        return entry

    def _pointer(self, entry: RegistryEntry | None) -> BlobId | None:
        if entry is None:
            return None
        try:
            return blob_id_from_pointer(entry.data)
        except ValueError as exc:
            raise BlobCorrupt(f"root registry entry holds no blob id: {exc}") from None

    async def get_root(self) -> BlobId | None:
        """The blob the registry entry points at, or None if it was never set."""
        return self._pointer(await self._read_entry("get_root"))

    async def set_root(self, new: BlobId, expected: BlobId | None) -> None:
        """Compare-and-set the root: write revision+1 only if the entry points at ``expected``.

        A concurrent writer makes the portal answer "Revision number too low"; then the entry
        is re-read and the swap retried while it still points at ``expected``.
        Raises RootConflict, BlobCorrupt (forged entry), BackendUnavailable.
        """
        seed = self._registry_key()
        data = pointer_data(new)
        sent: RegistryEntry | None = None
        async with self._root_lock:
            for _ in range(self._root_retries):
                current = await self._read_entry("set_root")
                if sent is not None and current is not None and (current.revision, current.data) == (
                        sent.revision, sent.data):
                    return  # our earlier attempt landed although its reply was lost
                pointer = self._pointer(current)
                if pointer != expected:
                    raise RootConflict(f"root pointer is {pointer}, expected {expected}")
                sent = sign_entry(seed, 0 if current is None else current.revision + 1, data)
                reply = await self._http.request(
                    "set_root", "POST", "s5/registry", json_body=sent.to_json(), auth=True,
                    final=lambda r: any(v in r.text for v in _REGISTRY_VERDICTS))
                if 200 <= reply.status < 300:
                    return
                if REVISION_TOO_LOW not in reply.text:
                    raise self._refused("set_root", reply)
        raise RootConflict(f"root pointer kept changing; gave up after {self._root_retries} attempts")

    # -- replication head ---------------------------------------------------------------

    def _head_key(self) -> bytes:
        """A second registry entry of the same phrase: ``dhs(root registry seed, "s5vec wal head")``."""
        return dhs(self._registry_key(), HEAD_KEY_CONTEXT)

    async def get_head(self) -> BlobId | None:
        """The blob the replication head entry points at, or None if it was never set."""
        entry = await self._read_entry("get_head", self._head_key())
        self._head_known = entry
        return self._pointer(entry)

    async def set_head(self, new: BlobId, expected: BlobId | None) -> None:
        """Compare-and-set the head entry from ``expected`` to ``new``. The entry last read
        or written is remembered, so a steady shipper costs one registry write and no read:
        if anyone else wrote since, the portal answers "Revision number too low", the entry
        is re-read, and a head that is no longer ``expected`` raises RootConflict.
        Raises RootConflict, BackendUnavailable."""
        seed = self._head_key()
        data = pointer_data(new)
        async with self._head_lock:
            known = self._head_known
            if known is False or self._pointer(known) != expected:  # never read, or not what the caller saw
                await self.get_head()
                known = self._head_known
            for _ in range(self._root_retries):
                assert known is not False
                if self._pointer(known) != expected:
                    raise RootConflict(f"replication head is {self._pointer(known)}, expected {expected}")
                sent = sign_entry(seed, 0 if known is None else known.revision + 1, data)
                reply = await self._http.request(
                    "set_head", "POST", "s5/registry", json_body=sent.to_json(), auth=True,
                    final=lambda r: any(v in r.text for v in _REGISTRY_VERDICTS))
                if 200 <= reply.status < 300:
                    self._head_known = sent
                    return
                if REVISION_TOO_LOW not in reply.text:
                    raise self._refused("set_head", reply)
                current = await self._read_entry("set_head", seed)
                if current is not None and (current.revision, current.data) == (sent.revision, sent.data):
                    self._head_known = sent
                    return  # an earlier attempt landed although its reply was lost
                self._head_known = known = current
        raise BackendUnavailable(f"replication head kept changing; gave up after {self._root_retries} attempts")
