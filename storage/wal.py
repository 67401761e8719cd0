"""Write-ahead log: CRC32C-framed records in numbered segment files, group-committed.

Frame: ``u32 payload length | u32 crc32c(length, lsn, payload) | u64 lsn | payload``.
Only the single writer thread calls the mutating methods.

Faults. A failed ``write`` (ENOSPC, EIO) cuts the segment back to its last synced size
before raising (StorageFull / StorageError), so the next append starts right after the
last good frame and recovery never stops at garbage in front of acknowledged records;
the log keeps accepting writes. A failed ``fsync`` leaves the page cache in an unknown
state (Linux marks the dirty pages clean and reports the error once: "fsyncgate"), and
so does a failed cut-back: the log then *fails* — it closes the segment, refuses every
later append with WalFailed until the process restarts, and recovery at the next start
decides from what is really on disk. A record of a failed append was never
acknowledged; it may or may not be replayed after a restart (an unknown outcome, as
for a timeout), but no acknowledged record is ever lost. A new segment is used only
once its directory entry is synced; failing that, the current segment goes on.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import crc32c

from .blobstore import fsync_dir, os_failure
from .errors import StorageError, WalCorrupt, WalFailed

HEADER: Final = struct.Struct("<IIQ")
_CRC_FIELDS: Final = struct.Struct("<IQ")
MAX_RECORD: Final = 1 << 30
SEGMENT_SUFFIX: Final = ".wal"
log = logging.getLogger(__name__)


def frame(lsn: int, payload: bytes) -> bytes:
    """One WAL frame for ``payload`` at sequence number ``lsn``."""
    crc = crc32c.crc32c(payload, crc32c.crc32c(_CRC_FIELDS.pack(len(payload), lsn)))
    return HEADER.pack(len(payload), crc, lsn) + payload


def parse_frames(data: bytes | memoryview, first_lsn: int | None = None) -> tuple[list[tuple[int, bytes]], int]:
    """Decode frames from ``data`` up to the first torn or corrupt one.

    Returns the ``(lsn, payload)`` records and the byte offset where valid data ends.
    LSNs must increase by one from ``first_lsn`` (or from the first record's).
    """
    view = memoryview(data)
    records: list[tuple[int, bytes]] = []
    offset = 0
    expected = first_lsn
    while offset + HEADER.size <= len(view):
        length, crc, lsn = HEADER.unpack_from(view, offset)
        end = offset + HEADER.size + length
        if length > MAX_RECORD or end > len(view):
            break
        payload = bytes(view[offset + HEADER.size:end])
        if crc32c.crc32c(payload, crc32c.crc32c(_CRC_FIELDS.pack(length, lsn))) != crc:
            break
        if expected is not None and lsn != expected:
            break
        records.append((lsn, payload))
        expected = lsn + 1
        offset = end
    return records, offset


class WriteAheadLog:
    """Append-only log of opaque payloads; a record is durable once append returns."""

    def __init__(self, directory: Path, segment_bytes: int = 64 << 20) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._fd: int | None = None
        self._segment_size = 0
        self.next_lsn = 1
        self._recovered = False
        self.syncs = 0
        self.failed: str | None = None  # why the log refuses writes (after a failed fsync)
        self.write_errors = 0  # appends that failed (each one refused, nothing acknowledged)

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self._dir.glob(f"*{SEGMENT_SUFFIX}"):
            # only names this class writes: int() would also take "-3", " 7" or "1_0", and a
            # stray file sorting first would cut the real segments after it
            if path.stem.isascii() and path.stem.isdigit():
                found.append((int(path.stem), path))
        return sorted(found)

    @property
    def size_bytes(self) -> int:
        """Bytes held in all segments (what a checkpoint would free)."""
        return sum(path.stat().st_size for _, path in self._segments())

    def recover(self, after_lsn: int) -> Iterator[tuple[int, bytes]]:
        """Yield every intact record with LSN > ``after_lsn``, in order.

        Cuts the log at the first torn or corrupt frame (later segments are removed)
        so new appends follow the last good record.
        """
        segments = self._segments()
        chain = None  # first LSN the next segment must start with
        for position, (first, path) in enumerate(segments):
            data = path.read_bytes()
            if position == 0 and first > after_lsn + 1:
                raise WalCorrupt(f"WAL starts at LSN {first} but the checkpoint ends at {after_lsn}: "
                                 "records in between are missing")
            if chain is not None and first != chain:
                log.error("WAL segment %s starts at LSN %d, expected %d; dropping it and later ones",
                          path.name, first, chain)
                self._drop(segments[position:])
                break
            records, good = parse_frames(data, first)
            for lsn, payload in records:
                if lsn > after_lsn:
                    yield lsn, payload
            chain = records[-1][0] + 1 if records else first
            if good < len(data):
                log.warning("WAL segment %s: torn or corrupt record at byte %d of %d; truncating",
                            path.name, good, len(data))
                with open(path, "r+b") as fh:
                    fh.truncate(good)
                    os.fsync(fh.fileno())
                self._drop(segments[position + 1:])
                break
        self.next_lsn = max(after_lsn + 1, chain or 0)
        if chain is not None and chain < self.next_lsn:
            # The checkpoint is past the log's end: every record left is in it, and a frame
            # appended to the last segment would not follow its LSNs (recovery would cut it).
            self._drop(self._segments())
        self._recovered = True

    def _drop(self, segments: list[tuple[int, Path]]) -> None:
        for _, path in segments:
            path.unlink(missing_ok=True)
        fsync_dir(self._dir)

    def _open_segment(self) -> None:
        """Switch to the segment starting at ``next_lsn``; on OSError the current one stays."""
        path = self._dir / f"{self.next_lsn:020d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            fsync_dir(self._dir)  # records in a segment whose name may vanish are not durable
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._segment_size = fd, size

    def _fail(self, reason: str) -> WalFailed:
        """Stop accepting writes (see the module docstring); returns the error to raise."""
        self.failed = reason
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        log.critical("write-ahead log failed: %s; writes are refused until the daemon restarts", reason)
        return WalFailed(f"the write-ahead log failed ({reason}); writes are refused until the daemon restarts")

    def append(self, payloads: list[bytes]) -> int:
        """Write ``payloads`` as consecutive records and fsync once; returns the last LSN.

        Raises StorageFull (disk full) or StorageError when the write fails, WalFailed when
        the fsync failed now or earlier; nothing of a failed call is acknowledged.
        """
        if not self._recovered:
            raise StorageError("WAL.recover() must run before append()")
        if self.failed is not None:
            raise WalFailed(f"the write-ahead log failed earlier ({self.failed}); "
                            "writes are refused until the daemon restarts")
        try:
            fd = self._current_fd()
        except OSError as exc:
            self.write_errors += 1
            raise os_failure("cannot open a WAL segment", exc) from exc
        lsn = self.next_lsn
        blob = b"".join(frame(lsn + i, payload) for i, payload in enumerate(payloads))
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            self.write_errors += 1
            # The tail may hold a partial frame, and O_APPEND would put the next frame after
            # it where recovery never looks: cut back to the last synced frame first.
            try:
                os.ftruncate(fd, self._segment_size)
            except OSError as cut:
                raise self._fail(f"write failed ({exc.strerror}) and the segment could not be cut back "
                                 f"({cut.strerror})") from exc
            raise os_failure("WAL write failed", exc) from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            self.write_errors += 1
            try:  # best effort: keep the unacknowledged frames from coming back at recovery
                os.ftruncate(fd, self._segment_size)
            except OSError:
                pass
            raise self._fail(f"fsync failed: {exc.strerror or exc}") from exc
        self.syncs += 1
        self._segment_size += len(blob)
        self.next_lsn = lsn + len(payloads)
        if self._segment_size >= self._segment_bytes:
            try:
                self._open_segment()
            except OSError as exc:  # the records are durable; the next append tries again
                log.warning("cannot start a new WAL segment (%s); the current one grows", exc.strerror)
        return self.next_lsn - 1

    def _current_fd(self) -> int:
        if self._fd is None:
            segments = self._segments()
            if segments and segments[-1][1].stat().st_size < self._segment_bytes:
                fd = os.open(segments[-1][1], os.O_WRONLY | os.O_APPEND)
                self._fd, self._segment_size = fd, os.fstat(fd).st_size
            else:
                self._open_segment()
        elif self._segment_size >= self._segment_bytes:
            try:
                self._open_segment()
            except OSError as exc:
                log.warning("cannot start a new WAL segment (%s); the current one grows", exc.strerror)
        assert self._fd is not None
        return self._fd

    def rotate(self) -> None:
        """Start a new segment so everything before ``next_lsn`` can be dropped later.
        Raises StorageError (the current segment stays in use); a failed log keeps its segment."""
        if self.failed is not None:
            return
        if self._segment_size > 0 or self._fd is None:
            try:
                self._open_segment()
            except OSError as exc:
                raise os_failure("cannot start a new WAL segment", exc) from exc

    def truncate_through(self, lsn: int) -> None:
        """Delete segments whose records all have LSN <= ``lsn`` (they are checkpointed)."""
        segments = self._segments()
        doomed = []
        for (first, path), (next_first, _) in zip(segments, segments[1:]):
            if next_first - 1 <= lsn:
                doomed.append((first, path))
        if doomed:
            try:
                self._drop(doomed)
            except OSError as exc:
                raise os_failure("cannot delete checkpointed WAL segments", exc) from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
