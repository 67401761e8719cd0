"""Write-ahead log: CRC32C-framed records in numbered segment files, group-committed.

Frame: ``u32 payload length | u32 crc32c(length, lsn, payload) | u64 lsn | payload``.
Only the single writer thread calls the mutating methods.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import crc32c

from .blobstore import fsync_dir
from .errors import StorageError, WalCorrupt

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

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self._dir.glob(f"*{SEGMENT_SUFFIX}"):
            try:
                found.append((int(path.stem), path))
            except ValueError:
                continue
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
        self._recovered = True

    def _drop(self, segments: list[tuple[int, Path]]) -> None:
        for _, path in segments:
            path.unlink(missing_ok=True)
        fsync_dir(self._dir)

    def _open_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self._dir / f"{self.next_lsn:020d}{SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_size = os.fstat(self._fd).st_size
        fsync_dir(self._dir)

    def append(self, payloads: list[bytes]) -> int:
        """Write ``payloads`` as consecutive records and fsync once; returns the last LSN.

        Raises StorageError when the write or fsync fails (nothing is acknowledged).
        """
        if not self._recovered:
            raise StorageError("WAL.recover() must run before append()")
        if self._fd is None:
            segments = self._segments()
            if segments and segments[-1][1].stat().st_size < self._segment_bytes:
                self._fd = os.open(segments[-1][1], os.O_WRONLY | os.O_APPEND)
                self._segment_size = os.fstat(self._fd).st_size
            else:
                self._open_segment()
        assert self._fd is not None
        lsn = self.next_lsn
        blob = b"".join(frame(lsn + i, payload) for i, payload in enumerate(payloads))
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
            self.syncs += 1
        except OSError as exc:
            # The tail may now hold a partial frame: cut it so later appends stay readable.
            try:
                os.ftruncate(self._fd, self._segment_size)
            except OSError:
                pass
            raise StorageError(f"WAL write failed: {exc.strerror}") from exc
        self._segment_size += len(blob)
        self.next_lsn = lsn + len(payloads)
        if self._segment_size >= self._segment_bytes:
            self._open_segment()
        return self.next_lsn - 1

    def rotate(self) -> None:
        """Start a new segment so everything before ``next_lsn`` can be dropped later."""
        if self._segment_size > 0 or self._fd is None:
            self._open_segment()

    def truncate_through(self, lsn: int) -> None:
        """Delete segments whose records all have LSN <= ``lsn`` (they are checkpointed)."""
        segments = self._segments()
        doomed = []
        for (first, path), (next_first, _) in zip(segments, segments[1:]):
            if next_first - 1 <= lsn:
                doomed.append((first, path))
        if doomed:
            self._drop(doomed)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
