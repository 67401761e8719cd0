"""The data directory's exclusive lock: one process (a daemon, or an offline command such as
``backup restore`` or ``wal salvage``) owns a data directory at a time.

The lock is ``flock`` on the directory itself, not on a file inside it: a lock file can be
deleted under a running daemon (``rm data/LOCK``), after which a second process would
create a new file, lock it and write to the same WAL and blobs. A directory that is in use
cannot be swapped out from under the holder by deleting an entry.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import StorageError


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
