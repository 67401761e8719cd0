"""A remote blob store whose root pointer is also kept in a local file.

The remote root (a portal's signed registry entry, a bridge file) stays the source of
truth; the local copy, replaced atomically after every swap the remote acknowledged, lets
a data directory start while the remote is down: its manifest and blobs are in the local
read cache and its WAL holds everything newer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .blobid import BlobId
from .blobstore import BlobStore, HeadPointer, OpenClose, write_atomic
from .errors import BackendUnavailable, BlobCorrupt, StorageError

T = TypeVar("T")
logger = logging.getLogger(__name__)


class RemoteStore(BlobStore, Protocol):
    """A BlobStore with a session to open and close and a cheap reachability probe."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...


class RootMirror(OpenClose):
    """BlobStore over ``remote`` that mirrors the root pointer into ``root_file``.

    ``get_root`` asks the remote (and refreshes the copy); when the remote is unavailable
    it answers from the copy, and without a copy it raises. A copy naming a root the
    remote has never had (the remote has no root at all) is refused: the directory belongs
    to another seed phrase, portal or storage mode. ``set_root`` writes the copy only
    after the remote acknowledged the swap. Blob calls go straight to the remote.
    """

    def __init__(self, remote: RemoteStore, root_file: Path, executor: Executor | None = None) -> None:
        self.remote = remote
        self._file = Path(root_file)
        self._executor = executor

    def __repr__(self) -> str:
        return f"RootMirror({self.remote!r}, {str(self._file)!r})"

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- lifecycle and probe -----------------------------------------------------------

    async def open(self) -> None:
        await self.remote.open()

    async def close(self) -> None:
        await self.remote.close()

    async def ping(self) -> bool:
        return await self.remote.ping()

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """The remote's request counters, if it keeps any."""
        stats = getattr(self.remote, "stats", None)
        return stats if isinstance(stats, dict) else {}

    # -- blobs --------------------------------------------------------------------------

    async def put(self, data: bytes) -> BlobId:
        return await self.remote.put(data)

    async def get(self, blob_id: BlobId) -> bytes:
        return await self.remote.get(blob_id)

    async def has(self, blob_id: BlobId) -> bool:
        return await self.remote.has(blob_id)

    async def delete(self, blob_id: BlobId) -> None:
        await self.remote.delete(blob_id)

    async def list(self) -> list[BlobId]:
        return await self.remote.list()

    # -- root ---------------------------------------------------------------------------

    def _read_copy(self) -> BlobId | None:
        try:
            text = self._file.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return BlobId.parse(text)
        except ValueError:
            raise BlobCorrupt(f"root pointer file {self._file} holds no blob id: {text[:80]!r}") from None

    def _write_copy(self, root: BlobId) -> None:
        write_atomic(self._file, (root.base32() + "\n").encode())

    async def local_root(self) -> BlobId | None:
        """The root as last acknowledged by the remote to this directory, or None."""
        return await self._run(self._read_copy)

    async def get_root(self) -> BlobId | None:
        """The remote root (refreshing the local copy), else the local copy.

        Raises BackendUnavailable when the remote is down and there is no copy;
        StorageError when the copy names a root the remote does not have."""
        copy = await self.local_root()
        try:
            remote = await self.remote.get_root()
        except BackendUnavailable as exc:
            if copy is None:
                raise BackendUnavailable(f"{exc}; this data directory holds no copy of the root pointer, "
                                         "so it cannot start until the backend answers") from None
            logger.warning("%s; starting from this directory's copy of the root pointer (%s)", exc, copy)
            return copy
        if remote is None and copy is not None:
            raise StorageError(
                f"this data directory's root pointer ({self._file}) names manifest {copy}, but the backend "
                "has no root pointer: the directory was written for another seed phrase, portal or storage "
                "mode. Start with an empty data directory (or the matching storage settings)")
        if remote is not None and remote != copy:
            if copy is not None:
                logger.info("the backend's root pointer %s is newer than this directory's copy %s; using it",
                            remote, copy)
            await self._run(self._write_copy, remote)
        return remote

    async def get_head(self) -> BlobId | None:
        """The remote's replication head (not mirrored: it is only useful while the remote
        answers). Raises StorageError when the remote has no head pointer."""
        return await self._head_store().get_head()

    async def set_head(self, new: BlobId, expected: BlobId | None) -> None:
        await self._head_store().set_head(new, expected)

    def _head_store(self) -> HeadPointer:
        if not isinstance(self.remote, HeadPointer):
            raise StorageError(f"{type(self.remote).__name__} has no replication head pointer")
        return self.remote

    async def set_root(self, new: BlobId, expected: BlobId | None) -> None:
        """Compare-and-set on the remote, then replace the local copy.
        Raises RootConflict, BackendUnavailable."""
        await self.remote.set_root(new, expected)
        await self._run(self._write_copy, new)
