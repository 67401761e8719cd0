"""Test-only disk-fault injection for a daemon subprocess (put this directory first on
PYTHONPATH). While the file named by ``S5VEC_FAULT_CONTROL`` holds a line
``<write|fsync> <ERRNO name> <path substring> [partial]``, matching ``os.write`` /
``os.fsync`` calls raise that OSError (``partial``: a write puts half its bytes down
first, a torn tail). An empty or missing file injects nothing; the test rewrites it while
the daemon runs. Not part of the package: production code has no fault hooks."""

from __future__ import annotations

import errno
import os

_CONTROL = os.environ.get("S5VEC_FAULT_CONTROL")

if _CONTROL:
    _real_write, _real_fsync = os.write, os.fsync

    def _rules() -> list[tuple[str, int, str, bool]]:
        # read on every call: an mtime check could miss a rewrite within the clock's tick
        try:
            with open(_CONTROL) as fh:
                lines = fh.read().splitlines()
        except OSError:
            return []
        return [(parts[0], getattr(errno, parts[1]), parts[2], "partial" in parts[3:])
                for parts in (line.split() for line in lines) if len(parts) >= 3]

    def _match(call: str, fd: int) -> tuple[int, bool] | None:
        rules = _rules()
        if not rules:
            return None
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        for kind, err, where, partial in rules:
            if kind == call and where in path:
                return err, partial
        return None

    def write(fd: int, data, /):  # type: ignore[no-untyped-def]
        hit = _match("write", fd)
        if hit is not None:
            if hit[1] and len(data) > 1:
                _real_write(fd, bytes(memoryview(data)[:len(data) // 2]))
            raise OSError(hit[0], os.strerror(hit[0]))
        return _real_write(fd, data)

    def fsync(fd, /):  # type: ignore[no-untyped-def]
        hit = _match("fsync", fd if isinstance(fd, int) else fd.fileno())
        if hit is not None:
            raise OSError(hit[0], os.strerror(hit[0]))
        return _real_fsync(fd)

    os.write, os.fsync = write, fsync
