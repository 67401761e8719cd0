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

import json
import logging
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import crc32c
import numpy as np

from .blobstore import fsync_dir, os_failure, write_atomic
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


_SCAN_CHUNK: Final = 1 << 22
_U64_MAX: Final = (1 << 64) - 1
_LSN_WINDOW: Final = 1 << 32
"""How far past the last good LSN a frame found after damage may be numbered (random bytes
rarely pass the LSN window, and then never the CRC)."""


@dataclass(frozen=True, slots=True)
class Damage:
    """A damaged stretch of the log with valid records after it.

    ``segment`` bytes ``[start, end)`` hold no readable record; the records after the last
    good LSN ``after_lsn`` resume at LSN ``resume_lsn`` (in ``resume_segment`` at byte
    ``resume_offset``), so LSNs ``after_lsn + 1 .. resume_lsn - 1`` are unreadable."""

    segment: Path
    start: int
    end: int
    after_lsn: int
    resume_lsn: int
    resume_segment: Path
    resume_offset: int

    @property
    def lost(self) -> range:
        """The LSNs the damage makes unreadable."""
        return range(self.after_lsn + 1, self.resume_lsn)

    def describe(self) -> str:
        lost = (f"LSN {self.lost.start}" if len(self.lost) == 1
                else f"LSNs {self.lost.start}..{self.lost.stop - 1}")
        where = (f"bytes {self.start}..{self.end} of {self.segment} cannot be read ({lost} unreadable)"
                 if self.end > self.start else f"{lost} missing at byte {self.start} of {self.segment}")
        return (f"{where}; valid records resume at LSN {self.resume_lsn} in {self.resume_segment.name} "
                f"at byte {self.resume_offset}")

    def as_dict(self) -> dict[str, Any]:
        return {"segment": str(self.segment), "start": self.start, "end": self.end,
                "after_lsn": self.after_lsn, "resume_lsn": self.resume_lsn,
                "resume_segment": str(self.resume_segment), "resume_offset": self.resume_offset,
                "lost_lsns": [self.lost.start, self.lost.stop - 1]}


class WalDamaged(WalCorrupt):
    """A frame in the middle of the log is damaged and valid records follow it: replaying
    past it would skip acknowledged records, cutting it would delete them. Nothing on disk
    was changed; ``s5vec wal inspect`` shows the damage, ``s5vec wal salvage`` sets it aside."""

    def __init__(self, damage: Damage, directory: Path) -> None:
        self.damage = damage
        super().__init__(f"write-ahead log damaged in the middle: {damage.describe()}. Nothing was changed on "
                         f"disk. Inspect with `s5vec wal inspect --data-dir {directory.parent}`; "
                         f"`s5vec wal salvage --data-dir {directory.parent}` keeps the damaged bytes aside and "
                         "replays every record after them")


def _valid_frame_at(data: memoryview, offset: int) -> tuple[int, int] | None:
    """``(lsn, end)`` of an intact frame starting at ``offset``, else None."""
    if offset + HEADER.size > len(data):
        return None
    length, crc, lsn = HEADER.unpack_from(data, offset)
    end = offset + HEADER.size + length
    if length > MAX_RECORD or end > len(data):
        return None
    if crc32c.crc32c(data[offset + HEADER.size:end], crc32c.crc32c(_CRC_FIELDS.pack(length, lsn))) != crc:
        return None
    return lsn, end


def find_frame(data: bytes | memoryview, start: int, after_lsn: int) -> tuple[int, int] | None:
    """The first intact frame at or after byte ``start`` whose LSN is above ``after_lsn``:
    ``(offset, lsn)``, or None. Vectorised over every byte offset (numpy), for recovery's
    question "is this a torn tail or damage with records after it?"."""
    view = memoryview(data)
    raw = np.frombuffer(view, dtype=np.uint8)
    last = len(raw) - HEADER.size  # last offset a header fits at
    # LSNs are u64 on disk; a segment named 0 makes ``after_lsn`` -1 (any LSN is above it)
    low = np.uint64(min(max(after_lsn, 0), _U64_MAX))
    high = np.uint64(min(max(after_lsn + _LSN_WINDOW, 0), _U64_MAX))
    strictly = after_lsn >= 0
    for base in range(start, last + 1, _SCAN_CHUNK):
        stop = min(base + _SCAN_CHUNK, last + 1)
        lsn = np.zeros(stop - base, dtype=np.uint64)
        for byte in range(8):  # the little-endian u64 at offset + 8 of every candidate offset
            lsn |= raw[base + 8 + byte:stop + 8 + byte].astype(np.uint64) << np.uint64(8 * byte)
        above = lsn > low if strictly else lsn >= low
        for hit in np.flatnonzero(above & (lsn <= high)):
            found = _valid_frame_at(view, base + int(hit))
            if found is not None:
                return base + int(hit), found[0]
    return None


def _damage_after(segments: list[tuple[int, Path]], position: int, data: bytes, good: int,
                  last_lsn: int) -> Damage | None:
    """The damage starting at byte ``good`` of segment ``position`` if any valid record with
    a higher LSN follows (in this segment or a later one); None for a torn tail."""
    path = segments[position][1]
    found = find_frame(data, good, last_lsn)
    if found is not None:
        return Damage(path, good, found[0], last_lsn, found[1], path, found[0])
    later = _first_record(segments[position + 1:], last_lsn)
    if later is not None:
        return Damage(path, good, len(data), last_lsn, later[2], later[0], later[1])
    return None


def _gap_damage(segments: list[tuple[int, Path]], position: int, chain: int) -> Damage | None:
    """Segment ``position`` does not start where the previous one ended: damage if a valid
    record follows anywhere from there on; None when those segments hold no record."""
    later = _first_record(segments[position:], chain - 1)
    if later is None:
        return None
    previous = segments[position - 1][1]
    size = previous.stat().st_size
    return Damage(previous, size, size, chain - 1, later[2], later[0], later[1])


def _first_record(segments: list[tuple[int, Path]], after_lsn: int) -> tuple[Path, int, int] | None:
    """``(segment, offset, lsn)`` of the first intact frame above ``after_lsn`` in ``segments``."""
    for _, path in segments:
        found = find_frame(path.read_bytes(), 0, after_lsn)
        if found is not None:
            return path, found[0], found[1]
    return None


@dataclass(frozen=True, slots=True)
class SegmentReport:
    """What one segment file holds: its records' LSN range and where readable data ends."""

    path: Path
    first: int
    size: int
    records: int
    last_lsn: int | None


@dataclass(frozen=True, slots=True)
class WalReport:
    """The result of :func:`scan`: every segment, every damage, and a torn tail if any."""

    segments: list[SegmentReport]
    damages: list[Damage]
    torn_tail: tuple[Path, int, int] | None  # (segment, first bad byte, size)

    def as_dict(self) -> dict[str, Any]:
        return {"segments": [{"file": str(s.path), "first_lsn": s.first, "bytes": s.size, "records": s.records,
                              "last_lsn": s.last_lsn} for s in self.segments],
                "damages": [d.as_dict() for d in self.damages],
                "torn_tail": None if self.torn_tail is None else
                {"file": str(self.torn_tail[0]), "offset": self.torn_tail[1], "bytes": self.torn_tail[2]}}


def _segment_files(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in Path(directory).glob(f"*{SEGMENT_SUFFIX}"):
        # only names the log writes: int() would also take "-3", " 7" or "1_0", and a
        # stray file sorting first would cut the real segments after it
        if path.stem.isascii() and path.stem.isdigit():
            found.append((int(path.stem), path))
    return sorted(found)


def scan(directory: Path) -> WalReport:
    """Read every segment of the log in ``directory`` (read only) and report its records,
    each damaged stretch with valid records after it, and a torn tail."""
    segments = _segment_files(directory)
    reports: list[SegmentReport] = []
    damages: list[Damage] = []
    torn: tuple[Path, int, int] | None = None
    last: int | None = None  # last readable LSN so far
    resume: tuple[Path, int, int] | None = None  # where reading goes on after a damage across segments
    for position, (first, path) in enumerate(segments):
        data = path.read_bytes()
        view = memoryview(data)
        if resume is not None and resume[0] != path:  # wholly inside a damaged stretch
            reports.append(SegmentReport(path, first, len(data), 0, None))
            continue
        offset, expected = 0, first
        if resume is not None:
            offset, expected, resume = resume[1], resume[2], None
        elif last is not None and first != last + 1:
            gap = _gap_damage(segments, position, last + 1)
            if gap is not None:
                damages.append(gap)
                if gap.resume_segment != path:
                    resume = (gap.resume_segment, gap.resume_offset, gap.resume_lsn)
                    reports.append(SegmentReport(path, first, len(data), 0, None))
                    continue
                offset, expected = gap.resume_offset, gap.resume_lsn
        count, seg_last = 0, None
        while offset < len(data):
            records, good = parse_frames(view[offset:], expected)
            count += len(records)
            if records:
                seg_last = records[-1][0]
                expected = seg_last + 1
            offset += good
            if offset >= len(data):
                break
            found = find_frame(view, offset, expected - 1)
            if found is not None:
                damages.append(Damage(path, offset, found[0], expected - 1, found[1], path, found[0]))
                offset, expected = found
                continue
            later = _first_record(segments[position + 1:], expected - 1)
            if later is None:
                torn = (path, offset, len(data))
            else:
                damages.append(Damage(path, offset, len(data), expected - 1, later[2], later[0], later[1]))
                resume = later
            break
        if seg_last is not None:
            last = seg_last
        elif last is None:
            last = first - 1
        reports.append(SegmentReport(path, first, len(data), count, seg_last))
    return WalReport(reports, damages, torn)


def salvage(directory: Path, filler: Callable[[int, Damage, Path], bytes], aside: Path) -> list[Damage]:
    """Make a damaged log replayable without losing the records after the damage.

    For every damage :func:`scan` finds, in order: the damaged bytes are copied into
    ``aside`` (fsynced, with a JSON description), and the segment is rewritten (temporary
    file, fsync, rename, fsync of the directory) as its records before the damage, one
    frame per unreadable LSN whose payload ``filler(lsn, damage, saved_file)`` gives (a
    marker the engine replays as "lost"), then its bytes from the next valid record on.
    Segments wholly inside a damaged stretch move into ``aside``. Must not run while a
    daemon has the log open. Returns the damages handled."""
    directory = Path(directory)
    handled: list[Damage] = []
    while True:
        damages = scan(directory).damages
        if not damages:
            return handled
        damage = damages[0]
        if handled and damage == handled[-1]:
            raise WalCorrupt(f"salvage could not repair {damage.describe()}")
        aside.mkdir(parents=True, exist_ok=True)
        data = damage.segment.read_bytes()
        saved = aside / f"{damage.segment.stem}.{damage.start}-{damage.end}.bin"
        write_atomic(saved, data[damage.start:damage.end])
        write_atomic(saved.with_suffix(".json"), json.dumps(damage.as_dict(), indent=2).encode())
        fill = b"".join(frame(lsn, filler(lsn, damage, saved)) for lsn in damage.lost)
        if damage.resume_segment == damage.segment:
            write_atomic(damage.segment, data[:damage.start] + fill + data[damage.resume_offset:])
        else:  # the log resumes in a later segment, which must be named after its first record
            later = damage.resume_segment.read_bytes()
            if damage.resume_offset:
                write_atomic(aside / f"{damage.resume_segment.stem}.0-{damage.resume_offset}.bin",
                             later[:damage.resume_offset])
            for _, path in _segment_files(directory):
                if damage.segment.name < path.name < damage.resume_segment.name:
                    os.replace(path, aside / path.name)
            resumed = directory / f"{damage.resume_lsn:020d}{SEGMENT_SUFFIX}"
            write_atomic(resumed, later[damage.resume_offset:])
            if resumed != damage.resume_segment:
                damage.resume_segment.unlink()
            write_atomic(damage.segment, data[:damage.start] + fill)
        fsync_dir(aside)
        handled.append(damage)


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
        return _segment_files(self._dir)

    @property
    def size_bytes(self) -> int:
        """Bytes held in all segments (what a checkpoint would free)."""
        return sum(path.stat().st_size for _, path in self._segments())

    def recover(self, after_lsn: int, repair: bool = True) -> Iterator[tuple[int, bytes]]:
        """Yield every intact record with LSN > ``after_lsn``, in order.

        Cuts a torn tail (a partial or garbled last frame with no valid frame after it) so
        new appends follow the last good record; with ``repair`` False (a reader beside the
        writer) nothing on disk changes and reading stops there, and the log cannot be
        appended to. Raises WalDamaged, changing nothing on disk, when a damaged frame has
        valid records after it (see :func:`scan`); records already yielded are then from
        before the damage.
        """
        segments = self._segments()
        chain = None  # first LSN the next segment must start with
        for position, (first, path) in enumerate(segments):
            data = path.read_bytes()
            if position == 0 and first > after_lsn + 1:
                raise WalCorrupt(f"WAL starts at LSN {first} but the checkpoint ends at {after_lsn}: "
                                 "records in between are missing")
            if chain is not None and first != chain:
                damage = _gap_damage(segments, position, chain)
                if damage is not None:
                    raise WalDamaged(damage, self._dir)
                if repair:
                    log.warning("WAL segment %s starts at LSN %d, expected %d, and holds no record; removing it",
                                path.name, first, chain)
                    self._drop(segments[position:])
                break
            records, good = parse_frames(data, first)
            for lsn, payload in records:
                if lsn > after_lsn:
                    yield lsn, payload
            chain = records[-1][0] + 1 if records else first
            if good < len(data):
                damage = _damage_after(segments, position, data, good, chain - 1)
                if damage is not None:
                    raise WalDamaged(damage, self._dir)
                if repair:
                    log.warning("WAL segment %s: torn last record at byte %d of %d (no valid record after it); "
                                "truncating", path.name, good, len(data))
                    with open(path, "r+b") as fh:
                        fh.truncate(good)
                        os.fsync(fh.fileno())
                    self._drop(segments[position + 1:])
                break
        self.next_lsn = max(after_lsn + 1, chain or 0)
        if not repair:
            return
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
