"""Blob store on the enhanced s5.js "bridge": a path API over HTTP (S5.md, last section).

Layout under ``/s5/fs/<prefix>/``: ``blobs/<base32 id>`` and ``ROOT`` (the root id as text).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Final

from .blobid import BlobId
from .errors import BackendUnavailable, BlobCorrupt, RootConflict, StorageError
from .portal import Http, RemoteBlobStore, Reply, S5Keys, Sealer
from .s5.seed import Identity

logger = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "s5vec"


def listing_names(body: Any) -> list[str]:
    """File names from a bridge directory listing: a JSON array of names (or of entry
    objects), or ``{"entries": [{"name", "type", "size"}]}``. Directories are skipped."""
    entries: Iterable[Any]
    if isinstance(body, dict):
        entries = body.get("entries") or []
    elif isinstance(body, list):
        entries = body
    else:
        return []
    names = []
    for entry in entries:
        if isinstance(entry, str):
            names.append(entry.rstrip("/"))
        elif (isinstance(entry, dict) and isinstance(entry.get("name"), str)
              and str(entry.get("type", "file")).lower() not in ("directory", "dir")):
            names.append(entry["name"])
    return names


class BridgeBlobStore(RemoteBlobStore):
    """BlobStore over the bridge's path API; every download is re-hashed.

    Encryption is on by default when an identity (or keys with an encryption key) is given.
    ``set_root`` is compare-and-set only within this process: the bridge offers no
    conditional write, so two processes can both read the old root and both write; the
    later write wins. Run one writer per bridge prefix (the daemon's single-writer rule).
    """

    def __init__(self, bridge_url: str, identity: Identity | S5Keys | None = None, *,
                 encrypt: bool | None = None, cache_dir: Path | None = None, prefix: str = DEFAULT_PREFIX,
                 auth_token: str | None = None, timeout: float = 60.0, connect_timeout: float = 10.0,
                 max_concurrency: int = 8, retries: int = 4, backoff: float = 0.25,
                 max_backoff: float = 8.0, executor: Executor | None = None) -> None:
        keys = S5Keys.of(identity)
        encrypt = keys.encryption_key is not None if encrypt is None else encrypt
        if encrypt and keys.encryption_key is None:
            raise ValueError("encrypt=True needs an identity or an encryption key")
        http = Http(bridge_url, what="S5 bridge", timeout=timeout, connect_timeout=connect_timeout,
                    max_concurrency=max_concurrency, retries=retries, backoff=backoff,
                    max_backoff=max_backoff)
        http.token = auth_token
        super().__init__(http, Sealer(keys.encryption_key if encrypt else None, executor),
                         cache_dir, executor)
        self._dir = f"s5/fs/{prefix.strip('/')}"

    async def ping(self) -> bool:
        """True if ``GET /health`` answers 2xx (no retries, short timeout)."""
        try:
            reply = await self._http.request("ping", "GET", "health", retries=0, timeout=5.0)
        except StorageError:
            return False
        return 200 <= reply.status < 300

    def _refused(self, op: str, reply: Reply) -> BackendUnavailable:
        return self._http.unavailable(op, f"HTTP {reply.status} {reply.text!r}")

    def _blob_path(self, blob_id: BlobId) -> str:
        return f"{self._dir}/blobs/{blob_id.base32()}"

    async def _upload(self, sealed: bytes, blob_id: BlobId) -> None:
        reply = await self._http.request("put", "PUT", self._blob_path(blob_id), data=sealed, auth=True)
        if not 200 <= reply.status < 300:
            raise self._refused("put", reply)

    async def _download(self, blob_id: BlobId) -> bytes | None:
        reply = await self._http.request("get", "GET", self._blob_path(blob_id), auth=True)
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise self._refused("get", reply)
        return reply.body

    async def _exists(self, blob_id: BlobId) -> bool:
        reply = await self._http.request("has", "HEAD", self._blob_path(blob_id), auth=True)
        if reply.status in (200, 404):
            return reply.status == 200
        raise self._refused("has", reply)

    async def _remove(self, blob_id: BlobId) -> None:
        reply = await self._http.request("delete", "DELETE", self._blob_path(blob_id), auth=True)
        if reply.status >= 300 and reply.status != 404:
            raise self._refused("delete", reply)

    async def list(self) -> list[BlobId]:
        """Every blob id in the bridge directory; names that are not blob ids are skipped."""
        reply = await self._http.request("list", "GET", f"{self._dir}/blobs/", auth=True)
        if reply.status == 404:
            return []
        if reply.status != 200:
            raise self._refused("list", reply)
        found = []
        for name in listing_names(reply.json()):
            try:
                found.append(BlobId.parse(name))
            except ValueError:
                continue
        return found

    async def get_root(self) -> BlobId | None:
        reply = await self._http.request("get_root", "GET", f"{self._dir}/ROOT", auth=True)
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise self._refused("get_root", reply)
        text = reply.body.decode("utf-8", "replace").strip()
        try:
            return BlobId.parse(text)
        except ValueError:
            raise BlobCorrupt(f"bridge root file holds no blob id: {text[:80]!r}") from None

    async def get_head(self) -> BlobId | None:
        """The replication head (a ``HEAD`` file beside ``ROOT``), or None."""
        reply = await self._http.request("get_head", "GET", f"{self._dir}/HEAD", auth=True)
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise self._refused("get_head", reply)
        text = reply.body.decode("utf-8", "replace").strip()
        try:
            return BlobId.parse(text)
        except ValueError:
            raise BlobCorrupt(f"bridge head file holds no blob id: {text[:80]!r}") from None

    async def set_head(self, new: BlobId, expected: BlobId | None) -> None:
        """Read, compare, write: compare-and-set within this process only (like the root)."""
        current = await self.get_head()
        if current != expected:
            raise RootConflict(f"replication head is {current}, expected {expected}")
        reply = await self._http.request("set_head", "PUT", f"{self._dir}/HEAD",
                                         data=(new.base32() + "\n").encode(), auth=True)
        if not 200 <= reply.status < 300:
            raise self._refused("set_head", reply)

    async def set_root(self, new: BlobId, expected: BlobId | None) -> None:
        """Read, compare, write: atomic against this store's other calls, best effort across
        processes (see the class docstring). Raises RootConflict, BackendUnavailable."""
        async with self._root_lock:
            current = await self.get_root()
            if current != expected:
                raise RootConflict(f"root pointer is {current}, expected {expected}")
            reply = await self._http.request("set_root", "PUT", f"{self._dir}/ROOT",
                                             data=(new.base32() + "\n").encode(), auth=True)
            if not 200 <= reply.status < 300:
                raise self._refused("set_root", reply)
