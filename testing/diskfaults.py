"""Disk faults for tests and fault campaigns: make ``os.write``, ``os.fsync``,
``os.ftruncate``, ``os.replace`` and ``os.open`` fail for chosen paths, in process::

    disk = DiskFaults()
    disk.arm("fsync", errno.EIO, "/wal/")  # the next fsync of a WAL file raises OSError(EIO)
    with disk.installed():
        ...  # run the engine; disk.injected counts what was raised

:func:`checkpoint_faults` lists where a checkpoint on a local data directory can fail.
Linux only (paths of file descriptors come from ``/proc/self/fd``). Imports nothing but
the standard library.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["CALLS", "CHECKPOINT_FAULT_NAMES", "DiskFaults", "checkpoint_faults"]

CALLS: Final = ("write", "fsync", "ftruncate", "replace", "open")


@dataclass
class _Rule:
    call: str
    err: int
    where: Callable[[str], bool]
    times: int | None  # None: until disarmed
    partial: bool  # a write puts half its bytes down before failing (a torn tail)
    label: str  # what ``injected`` counts it as


@dataclass
class DiskFaults:
    """Make ``os.write``/``os.fsync``/``os.ftruncate``/``os.replace``/``os.open`` raise
    OSError for chosen paths while :meth:`installed`; other paths are untouched.

    Paths of file descriptors come from ``/proc/self/fd`` (Linux). ``injected`` counts
    raised faults by ``"call:ERRNO"``. Thread safe (the engine's workers call these)."""

    rules: list[_Rule] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, call: str, err: int = errno.ENOSPC, where: Callable[[str], bool] | str = "",
            times: int | None = 1, partial: bool = False, label: str | None = None) -> None:
        """Fail the next ``times`` (None: every) ``call`` on a path ``where`` accepts (a
        substring or a predicate); ``label`` names the fault in ``injected``."""
        if call not in CALLS:
            raise ValueError(f"call must be one of {CALLS}")
        test = where if callable(where) else (lambda path, part=where: part in path)
        name = label or f"{call}:{errno.errorcode.get(err, err)}"
        with self._lock:
            self.rules.append(_Rule(call, err, test, times, partial, name))

    def disarm(self) -> None:
        with self._lock:
            self.rules.clear()

    def _match(self, call: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.call == call and rule.where(path):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self.rules.remove(rule)
                    self.injected[rule.label] += 1
                    return rule
        return None

    @contextmanager
    def installed(self) -> Iterator[DiskFaults]:
        """Patch the ``os`` functions for the duration of the block."""
        real = {name: getattr(os, name) for name in CALLS}

        def fd_path(fd: int) -> str:
            try:
                return os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                return ""

        def fail(rule: _Rule, path: str) -> OSError:
            return OSError(rule.err, os.strerror(rule.err), path)

        def write(fd: int, data: Any) -> int:
            if self.rules and (rule := self._match("write", fd_path(fd))) is not None:
                if rule.partial and len(data) > 1:
                    real["write"](fd, bytes(memoryview(data)[:len(data) // 2]))
                raise fail(rule, fd_path(fd))
            return int(real["write"](fd, data))

        def fsync(fd: int) -> None:
            if self.rules and (rule := self._match("fsync", fd_path(fd))) is not None:
                raise fail(rule, fd_path(fd))
            real["fsync"](fd)

        def ftruncate(fd: int, length: int) -> None:
            if self.rules and (rule := self._match("ftruncate", fd_path(fd))) is not None:
                raise fail(rule, fd_path(fd))
            real["ftruncate"](fd, length)

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if self.rules and (rule := self._match("replace", os.fspath(dst))) is not None:
                raise fail(rule, os.fspath(dst))
            real["replace"](src, dst, *args, **kwargs)

        def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if self.rules and flags & os.O_CREAT and (rule := self._match("open", os.fspath(path))) is not None:
                raise fail(rule, os.fspath(path))
            return int(real["open"](path, flags, *args, **kwargs))

        for name, fn in (("write", write), ("fsync", fsync), ("ftruncate", ftruncate), ("replace", replace),
                         ("open", open_)):
            setattr(os, name, fn)
        try:
            yield self
        finally:
            for name, fn in real.items():
                setattr(os, name, fn)


CHECKPOINT_FAULT_NAMES: Final = (
    "checkpoint blob write ENOSPC", "checkpoint blob fsync EIO", "checkpoint blob rename EIO",
    "checkpoint ROOT write ENOSPC", "checkpoint ROOT fsync EIO", "checkpoint ROOT rename EIO",
    "checkpoint ROOT dir fsync EIO", "checkpoint WAL segment create ENOSPC")


def checkpoint_faults(data_dir: Path) -> list[tuple[str, int, Callable[[str], bool] | str]]:
    """Where a checkpoint can fail on a local directory: ``(call, errno, path test)``, in
    the order of :data:`CHECKPOINT_FAULT_NAMES`."""
    here = str(data_dir.resolve())
    return [
        ("write", errno.ENOSPC, "/blobs/"),  # a blob's bytes
        ("fsync", errno.EIO, "/blobs/"),  # a blob file or its directory
        ("replace", errno.EIO, "/blobs/"),  # a blob's rename
        ("write", errno.ENOSPC, "/.ROOT."),  # the new root pointer's bytes
        ("fsync", errno.EIO, "/.ROOT."),
        ("replace", errno.EIO, "/ROOT"),  # the root swap itself
        ("fsync", errno.EIO, lambda path: path == here),  # after the swap: the directory entry
        ("open", errno.ENOSPC, "/wal/"),  # the new WAL segment the checkpoint starts
    ]
