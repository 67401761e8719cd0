"""Content-addressed blob stores behind one small interface (local directory today)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self, TypeVar

from .blobid import BlobId
from .errors import BlobCorrupt, BlobNotFound, RootConflict, StorageError

T = TypeVar("T")
ROOT_FILE: Final = "ROOT"


class BlobStore(Protocol):
    """Immutable blobs addressed by :class:`BlobId`, plus one mutable root pointer."""

    async def put(self, data: bytes) -> BlobId: ...
    async def get(self, blob_id: BlobId) -> bytes: ...
    async def has(self, blob_id: BlobId) -> bool: ...
    async def delete(self, blob_id: BlobId) -> None: ...
    async def list(self) -> list[BlobId]: ...
    async def get_root(self) -> BlobId | None: ...
    async def set_root(self, new: BlobId, expected: BlobId | None) -> None: ...


class OpenClose:
    """``async with`` for a store with ``open()``/``close()`` (the remote backends)."""

    async def open(self) -> None:
        """Acquire what the store needs (a session); nothing by default."""

    async def close(self) -> None:
        """Release it."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class LocalBlobStore:
    """Blobs as files ``blobs/<2 chars>/<base32 id>`` under a data directory.

    Every read re-hashes the bytes; blocking file work runs on ``executor``.
    """

    def __init__(self, root: Path, executor: Executor | None = None) -> None:
        self._root = Path(root)
        self._blobs = self._root / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._executor = executor
        self._root_lock = threading.Lock()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _path(self, blob_id: BlobId) -> Path:
        name = blob_id.base32()
        return self._blobs / name[-2:] / name

    def put_sync(self, data: bytes) -> BlobId:
        blob_id = BlobId.of(data)
        path = self._path(blob_id)
        if path.exists() and path.stat().st_size == blob_id.size:
            try:
                if BlobId.of(path.read_bytes()) == blob_id:
                    return blob_id  # already stored intact (content addressing dedupes)
            except OSError:
                pass
        path.parent.mkdir(exist_ok=True)
        try:
            write_atomic(path, data)
        except OSError as exc:
            raise StorageError(f"cannot write blob {blob_id}: {exc.strerror}") from exc
        return blob_id

    def get_sync(self, blob_id: BlobId) -> bytes:
        try:
            data = self._path(blob_id).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {blob_id} is not stored") from None
        if len(data) != blob_id.size or BlobId.of(data) != blob_id:
            raise BlobCorrupt(f"blob {blob_id} does not match its content address")
        return data

    def delete_sync(self, blob_id: BlobId) -> None:
        path = self._path(blob_id)
        path.unlink(missing_ok=True)

    def list_sync(self) -> list[BlobId]:
        found = []
        for path in self._blobs.glob("*/b*"):
            try:
                found.append(BlobId.parse(path.name))
            except ValueError:
                continue
        return found

    def get_root_sync(self) -> BlobId | None:
        try:
            text = (self._root / ROOT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return BlobId.parse(text)
        except ValueError:
            raise BlobCorrupt(f"root pointer file holds no blob id: {text[:80]!r}") from None

    def set_root_sync(self, new: BlobId, expected: BlobId | None) -> None:
        with self._root_lock:
            current = self.get_root_sync()
            if current != expected:
                raise RootConflict(f"root pointer is {current}, expected {expected}")
            write_atomic(self._root / ROOT_FILE, (new.base32() + "\n").encode())

    async def put(self, data: bytes) -> BlobId:
        return await self._run(self.put_sync, data)

    async def get(self, blob_id: BlobId) -> bytes:
        return await self._run(self.get_sync, blob_id)

    async def has(self, blob_id: BlobId) -> bool:
        return await self._run(self._path(blob_id).exists)

    async def delete(self, blob_id: BlobId) -> None:
        await self._run(self.delete_sync, blob_id)

    async def list(self) -> list[BlobId]:
        return await self._run(self.list_sync)

    async def get_root(self) -> BlobId | None:
        return await self._run(self.get_root_sync)

    async def set_root(self, new: BlobId, expected: BlobId | None) -> None:
        await self._run(self.set_root_sync, new, expected)
