"""A writer-preferring readers-writer lock for threads."""

from __future__ import annotations

import threading
from types import TracebackType


class RWLock:
    """Many readers or one writer; waiting writers block new readers (no starvation).

    ``with lock.read():`` and ``with lock.write():`` are plain ``__enter__``/``__exit__``
    methods that take the mutex directly (not through the Condition's Python-level
    ``__enter__``): the read side is on every search's path, where a 50-d graph search at
    low ef takes ~30 µs and a generator-based context manager cost ~1 µs of it."""

    __slots__ = ("_mutex", "_cond", "_readers", "_writer", "_writers_waiting", "_read", "_write")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._read = _ReadSide(self)
        self._write = _WriteSide(self)

    def read(self) -> _ReadSide:
        return self._read

    def write(self) -> _WriteSide:
        return self._write


class _ReadSide:
    __slots__ = ("_rw",)

    def __init__(self, rw: RWLock) -> None:
        self._rw = rw

    def __enter__(self) -> None:
        rw = self._rw
        with rw._mutex:
            while rw._writer or rw._writers_waiting:
                rw._cond.wait()
            rw._readers += 1

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        rw = self._rw
        with rw._mutex:
            rw._readers -= 1
            if not rw._readers and rw._writers_waiting:  # only a writer waits on readers
                rw._cond.notify_all()


class _WriteSide:
    __slots__ = ("_rw",)

    def __init__(self, rw: RWLock) -> None:
        self._rw = rw

    def __enter__(self) -> None:
        rw = self._rw
        with rw._mutex:
            rw._writers_waiting += 1
            while rw._writer or rw._readers:
                rw._cond.wait()
            rw._writers_waiting -= 1
            rw._writer = True

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        rw = self._rw
        with rw._mutex:
            rw._writer = False
            rw._cond.notify_all()
