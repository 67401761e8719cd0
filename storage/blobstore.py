"""Content-addressed blob stores behind one small interface (local directory today).

Faults of the local directory: a failed write, fsync, rename or directory fsync raises
StorageError (StorageFull for ENOSPC/EDQUOT) and leaves the previous file, never a
partial one, under the final name; a temporary file left by a crash between write and
rename is never listed or read and :meth:`LocalBlobStore.remove_stale_temporaries_sync`
deletes it. A blob whose bytes no longer hash to its id raises BlobCorrupt on every read
and is counted in ``stats``; it is never returned.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self, TypeVar, runtime_checkable

from .blobid import BlobId
from .datadir import DataDir
from .errors import BlobCorrupt, BlobNotFound, RootConflict, StorageError, StorageFull

T = TypeVar("T")
_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class BlobStore(Protocol):
    """Immutable blobs addressed by :class:`BlobId`, plus one mutable root pointer."""

    async def put(self, data: bytes) -> BlobId: ...
    async def get(self, blob_id: BlobId) -> bytes: ...
    async def has(self, blob_id: BlobId) -> bool: ...
    async def delete(self, blob_id: BlobId) -> None: ...
    async def list(self) -> list[BlobId]: ...
    async def get_root(self) -> BlobId | None: ...
    async def set_root(self, new: BlobId, expected: BlobId | None) -> None: ...


@runtime_checkable
class HeadPointer(Protocol):
    """A second mutable pointer beside the root: the replication head, naming the shipped WAL
    chunks after a manifest (see :mod:`s5vec.engine.shipping`). ``set_head`` is
    compare-and-set (RootConflict when the head is not ``expected``): a writer that finds
    the head moved by someone else has been replaced and must stop."""

    async def get_head(self) -> BlobId | None: ...
    async def set_head(self, new: BlobId, expected: BlobId | None) -> None: ...


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


def os_failure(what: str, exc: OSError) -> StorageError:
    """The StorageError for an OSError while doing ``what``: StorageFull for a full disk."""
    kind = StorageFull if exc.errno in _FULL else StorageError
    return kind(f"{what}: {exc.strerror or exc}")


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new file, never a mix.

    Raises OSError; the temporary file is removed then, and ``path`` keeps its old bytes
    unless only the final directory fsync failed (the new file is in place, not yet durable)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class LocalBlobStore:
    """Blobs as files ``blobs/<2 chars>/<base32 id>`` under a data directory.

    Every read re-hashes the bytes; blocking file work runs on ``executor``.
    """

    def __init__(self, root: Path, executor: Executor | None = None) -> None:
        self._root = Path(root)
        self._blobs = DataDir(self._root).blobs
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._executor = executor
        self._root_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.stats: dict[str, dict[str, int]] = {"requests": {}, "errors": {}, "retries": {}}
        self.corrupt: set[BlobId] = set()  # blobs a read found damaged (until a read or put finds them intact)

    def _count(self, kind: str, op: str) -> None:
        with self._stats_lock:
            self.stats[kind][op] = self.stats[kind].get(op, 0) + 1

    def remove_stale_temporaries_sync(self) -> int:
        """Delete temporary files other processes left (a crash between write and rename);
        call only while holding the data directory. Returns how many went."""
        mine = f".{os.getpid()}."
        removed = 0
        for path in [*self._blobs.glob("*/.*.tmp"), *self._root.glob(".*.tmp")]:
            if mine not in path.name:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _path(self, blob_id: BlobId) -> Path:
        name = blob_id.base32()
        return self._blobs / name[-2:] / name

    def put_sync(self, data: bytes) -> BlobId:
        """Store ``data`` durably; raises StorageFull, StorageError (nothing half-written)."""
        blob_id = BlobId.of(data)
        path = self._path(blob_id)
        self._count("requests", "put")
        try:
            if path.exists() and path.stat().st_size == blob_id.size and self._intact(path, blob_id):
                # stored already (content addressing dedupes); an earlier put may have failed
                # at the directory fsync, so make the name durable before saying it is stored
                fsync_dir(path.parent)
                self.corrupt.discard(blob_id)
                return blob_id
            path.parent.mkdir(exist_ok=True)
            write_atomic(path, data)
        except OSError as exc:
            self._count("errors", "put")
            raise os_failure(f"cannot write blob {blob_id}", exc) from exc
        self.corrupt.discard(blob_id)
        return blob_id

    @staticmethod
    def _intact(path: Path, blob_id: BlobId) -> bool:
        try:
            return BlobId.of(path.read_bytes()) == blob_id
        except OSError:
            return False  # unreadable: write it again

    def get_sync(self, blob_id: BlobId) -> bytes:
        """The bytes of ``blob_id``, re-hashed; raises BlobNotFound, BlobCorrupt, StorageError (I/O)."""
        self._count("requests", "get")
        try:
            data = self._path(blob_id).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {blob_id} is not stored") from None
        except OSError as exc:
            self._count("errors", "get")
            raise os_failure(f"cannot read blob {blob_id}", exc) from exc
        if len(data) != blob_id.size or BlobId.of(data) != blob_id:
            self._count("errors", "get")
            self.corrupt.add(blob_id)
            raise BlobCorrupt(f"blob {blob_id} does not match its content address")
        self.corrupt.discard(blob_id)
        return data

    def delete_sync(self, blob_id: BlobId) -> None:
        path = self._path(blob_id)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            self._count("errors", "delete")
            raise os_failure(f"cannot delete blob {blob_id}", exc) from exc
        self.corrupt.discard(blob_id)

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
            text = DataDir(self._root).root_file.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._count("errors", "root")
            raise os_failure("cannot read the root pointer", exc) from exc
        try:
            return BlobId.parse(text)
        except ValueError:
            raise BlobCorrupt(f"root pointer file holds no blob id: {text[:80]!r}") from None

    def set_root_sync(self, new: BlobId, expected: BlobId | None) -> None:
        with self._root_lock:
            current = self.get_root_sync()
            if current != expected:
                raise RootConflict(f"root pointer is {current}, expected {expected}")
            self._count("requests", "root")
            try:
                write_atomic(DataDir(self._root).root_file, (new.base32() + "\n").encode())
            except OSError as exc:
                self._count("errors", "root")
                raise os_failure("cannot swap the root pointer", exc) from exc

    def get_head_sync(self) -> BlobId | None:
        path = DataDir(self._root).head_file
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_failure("cannot read the replication head", exc) from exc
        try:
            return BlobId.parse(text)
        except ValueError:
            raise BlobCorrupt(f"replication head file holds no blob id: {text[:80]!r}") from None

    def set_head_sync(self, new: BlobId, expected: BlobId | None) -> None:
        with self._root_lock:
            current = self.get_head_sync()
            if current != expected:
                raise RootConflict(f"replication head is {current}, expected {expected}")
            self._write_head(new)

    def _write_head(self, new: BlobId) -> None:
        try:
            write_atomic(DataDir(self._root).head_file, (new.base32() + "\n").encode())
        except OSError as exc:
            raise os_failure("cannot replace the replication head", exc) from exc

    async def get_head(self) -> BlobId | None:
        return await self._run(self.get_head_sync)

    async def set_head(self, new: BlobId, expected: BlobId | None) -> None:
        await self._run(self.set_head_sync, new, expected)

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
