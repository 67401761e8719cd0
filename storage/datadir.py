"""The data directory: its layout (every file and folder name, in one place) and its
exclusive lock: one process (a daemon, or an offline command such as ``backup restore`` or
``wal salvage``) owns a data directory at a time; readers take no lock.

Layout::

    <data_dir>/
      ROOT                 the current manifest's blob id (atomically replaced)
      BACKUPS              the backup catalog's blob id
      HEAD                 the replication head's blob id (local storage with WAL shipping)
      wal/<first LSN>.wal  write-ahead log segments
      blobs/xx/b<blob id>  immutable CBOR+zstd blobs (local storage)
      tmp/                 scratch files, emptied at every start
      segments/<collection>/<seq>.f32   sealed segments' vectors, rebuilt from blobs at start
      wal-damaged/         bytes `s5vec wal salvage` set aside

The lock is ``flock`` on the directory itself, not on a file inside it: a lock file can be
deleted under a running daemon (``rm data/LOCK``), after which a second process would
create a new file, lock it and write to the same WAL and blobs. A directory that is in use
cannot be swapped out from under the holder by deleting an entry.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import StorageError

ROOT_FILE: Final = "ROOT"
HEAD_FILE: Final = "HEAD"
BACKUPS_FILE: Final = "BACKUPS"


@dataclass(frozen=True, slots=True)
class DataDir:
    """The paths of one data directory (nothing is created or checked here)."""

    path: Path

    @property
    def root_file(self) -> Path:
        return self.path / ROOT_FILE

    @property
    def head_file(self) -> Path:
        """The last published replication head (shipped WAL chunks after a manifest)."""
        return self.path / HEAD_FILE

    @property
    def backups_file(self) -> Path:
        return self.path / BACKUPS_FILE

    @property
    def wal(self) -> Path:
        return self.path / "wal"

    @property
    def blobs(self) -> Path:
        return self.path / "blobs"

    @property
    def scratch(self) -> Path:
        return self.path / "tmp"

    @property
    def segments(self) -> Path:
        return self.path / "segments"

    @property
    def wal_damaged(self) -> Path:
        return self.path / "wal-damaged"


class DataDirLocked(StorageError):
    """Another process holds the data directory."""


def lock_directory(data_dir: Path) -> int:
    """Take the data directory's exclusive lock (created if absent); returns the file
    descriptor to pass to :func:`unlock_directory`. Raises DataDirLocked."""
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLocked(f"data directory {path} is in use by another s5vec process") from None
    return fd


def unlock_directory(fd: int) -> None:
    """Release a lock taken by :func:`lock_directory`."""
    os.close(fd)
