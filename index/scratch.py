"""Scratch files of the index: copies rebuilt from the blob store, never the only copy.

hnswlib reads and writes its graph only through a file path, and sealed segments keep
their vectors, ids and metadata in memory-mapped files. None of these need the data
directory's disk: the graph goes through an anonymous in-memory file (``memfd``), and a
segment file that cannot be written because the disk is full is kept in memory instead,
so a daemon restarting on a full disk still loads and serves reads.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import numpy as np

_FULL: Final = (errno.ENOSPC, errno.EDQUOT)
log = logging.getLogger(__name__)


@contextmanager
def graph_file(fallback_dir: Path) -> Iterator[str]:
    """A path hnswlib can save to and load from, deleted afterwards: an in-memory file
    (``memfd``, Linux), else a temporary file in ``fallback_dir``."""
    try:
        fd = os.memfd_create("s5vec-hnsw", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix="hnsw-", suffix=".bin", dir=fallback_dir)
        os.close(fd)
        try:
            yield path
        finally:
            os.unlink(path)
        return
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def file_backed(path: Path, data: Any, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``data`` (bytes-like) as a read-only array backed by ``path``, written atomically
    without fsync (a scratch copy). On a full disk (ENOSPC, EDQUOT) the array is the bytes
    in memory instead, with a warning. Raises OSError for any other failure."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno not in _FULL:
            raise
        log.warning("disk full: %s is kept in memory instead of %s", _size(len(memoryview(data).cast("B"))), path)
        return np.frombuffer(data, dtype).reshape(shape)
    if not np.prod(shape, dtype=np.int64):
        return np.zeros(shape, dtype)
    # a plain ndarray over the map (which its base keeps open): indexing a np.memmap goes
    # through Python-level __getitem__/__array_finalize__, ~15 us per gather in a search
    return np.memmap(path, dtype=dtype, mode="r", shape=shape).view(np.ndarray)


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
