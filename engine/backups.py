"""The backup catalog: which backups a data directory retains, and the blobs they pin.

A backup is one small record blob ``{manifest, lsn, created, label}``; the record's blob id
is the backup's id, so a backup cannot change without changing its name. The catalog is
one index blob listing every retained backup; the data directory's ``BACKUPS`` file names
it and is replaced atomically. A backup pins its manifest and every blob the manifest
references: the engine's garbage collection keeps whatever :meth:`BackupCatalog.pinned`
returns. It lives in the engine because it is data-directory state that garbage collection
must honour; creating, restoring, exporting and importing backups are procedures in
:mod:`s5vec.ops.backup`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from s5vec.storage import (
    BlobCorrupt,
    BlobId,
    BlobNotFound,
    BlobStore,
    StorageError,
    decode_blob,
    encode_blob,
    write_atomic,
)
from s5vec.storage.datadir import DataDir

from .manifest import read_manifest, referenced_blobs

log = logging.getLogger(__name__)
RECORD_FORMAT: Final = "s5vec-backup"
INDEX_FORMAT: Final = "s5vec-backups"
VERSION: Final = 1
_PARALLEL: Final = 8  # blobs fetched at once while verifying or exporting
Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as long work goes on."""


class BackupNotFound(StorageError):
    """No retained backup matches the given id, prefix or time."""


@dataclass(frozen=True, slots=True)
class BackupConfig:
    """The ``[backup]`` section: schedule and retention (keep the newest ``keep_last``,
    plus the newest backup of each of the last ``keep_daily`` days and ``keep_weekly`` ISO
    weeks that have one)."""

    interval_s: float = 0.0   # scheduled backups; 0 = only on demand
    keep_last: int = 7
    keep_daily: int = 7
    keep_weekly: int = 4


@dataclass(frozen=True, slots=True)
class Backup:
    """One retained backup; ``id`` is the content address of its record."""

    id: BlobId
    manifest: BlobId
    created: float
    lsn: int
    label: str = ""

    def record(self) -> dict[str, Any]:
        return record_of(self.manifest, self.lsn, self.created, self.label)

    def as_dict(self) -> dict[str, Any]:
        created = dt.datetime.fromtimestamp(self.created, dt.UTC).isoformat(timespec="seconds")
        return {"id": str(self.id), "manifest": str(self.manifest), "created": self.created,
                "created_at": created.replace("+00:00", "Z"), "lsn": self.lsn, "label": self.label}

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Backup:
        try:
            return cls(BlobId.from_bytes(entry["id"]), BlobId.from_bytes(entry["manifest"]), float(entry["created"]),
                       int(entry["lsn"]), str(entry.get("label", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise BlobCorrupt(f"backup catalog entry is malformed: {exc}") from None


def record_of(manifest: BlobId, lsn: int, created: float, label: str) -> dict[str, Any]:
    """The document a backup record blob holds."""
    return {"format": RECORD_FORMAT, "version": VERSION, "manifest": manifest.to_bytes(), "lsn": lsn,
            "created": created, "label": label}


def retained(backups: Sequence[Backup], keep_last: int, keep_daily: int, keep_weekly: int) -> set[BlobId]:
    """Ids to keep: the newest ``keep_last``, plus the newest backup of each of the
    ``keep_daily`` most recent local days and ``keep_weekly`` most recent ISO weeks that
    have a backup (a pause in backups never expires the last ones)."""
    newest = sorted(backups, key=lambda b: b.created, reverse=True)
    keep = {b.id for b in newest[:keep_last]}

    def day(b: Backup) -> tuple[int, ...]:
        return tuple(dt.datetime.fromtimestamp(b.created).timetuple()[:3])

    def week(b: Backup) -> tuple[int, ...]:
        iso = dt.datetime.fromtimestamp(b.created).isocalendar()
        return (iso.year, iso.week)

    for count, period in ((keep_daily, day), (keep_weekly, week)):
        seen: set[tuple[int, ...]] = set()
        for backup in newest:
            key = period(backup)
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(key)
            keep.add(backup.id)
    return keep


class BackupCatalog:
    """The retained backups of one data directory (see the module docstring).

    Touched only on the event loop; one update at a time. Reads pick up a ``BACKUPS``
    file replaced by another process (``s5vec backup import`` on a stopped daemon)."""

    def __init__(self, data_dir: Path, store: BlobStore) -> None:
        self._file = DataDir(Path(data_dir)).backups_file
        self._store = store
        self._lock = asyncio.Lock()
        self._index: BlobId | None = None
        self._backups: list[Backup] = []
        self._pending: set[BlobId] = set()            # blobs of an update in flight: kept by GC
        self._pending_manifests: list[BlobId] = []
        self._refs: dict[BlobId, frozenset[BlobId]] = {}  # manifest -> its blobs (immutable)

    # ------------------------------------------------------------------ reads
    async def _load(self) -> None:
        try:
            text = self._file.read_text().strip()  # a few bytes
        except FileNotFoundError:
            self._index, self._backups = None, []
            return
        try:
            index = BlobId.parse(text)
        except ValueError:
            raise BlobCorrupt(f"{self._file} holds no blob id: {text[:80]!r}") from None
        if index == self._index:
            return
        doc = decode_blob(await self._store.get(index))
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT or doc.get("version") != VERSION:
            raise BlobCorrupt(f"blob {index} is not an s5vec backup catalog")
        backups = [Backup.from_entry(entry) for entry in doc.get("backups", [])]
        self._index, self._backups = index, sorted(backups, key=lambda b: b.created, reverse=True)

    async def backups(self) -> list[Backup]:
        """Every retained backup, newest first."""
        await self._load()
        return list(self._backups)

    async def find(self, ref: str) -> Backup:
        """The backup named by ``ref``: ``latest``, a full id or a unique id prefix (at
        least 8 characters). Raises BackupNotFound."""
        backups = await self.backups()
        if ref == "latest":
            if not backups:
                raise BackupNotFound("there are no backups")
            return backups[0]
        matches = [b for b in backups if str(b.id) == ref]
        if not matches and len(ref) >= 8:
            matches = [b for b in backups if str(b.id).startswith(ref)]
        if len(matches) != 1:
            raise BackupNotFound(f"no backup {ref!r}" if not matches else f"backup prefix {ref!r} is ambiguous")
        return matches[0]

    async def at(self, when: float) -> Backup:
        """The newest backup created at or before ``when`` (Unix seconds). Raises BackupNotFound."""
        for backup in await self.backups():
            if backup.created <= when:
                return backup
        raise BackupNotFound(f"no backup was made at or before {dt.datetime.fromtimestamp(when).isoformat()}")

    async def manifest_blobs(self, manifest: BlobId) -> frozenset[BlobId]:
        """Every blob ``manifest`` references (cached: manifests never change)."""
        refs = self._refs.get(manifest)
        if refs is None:
            refs = self._refs[manifest] = frozenset(referenced_blobs(await read_manifest(self._store, manifest)))
        return refs

    async def blobs_of(self, backup: Backup) -> list[BlobId]:
        """The blobs a backup consists of: its record, its manifest and what that references."""
        refs = sorted(await self.manifest_blobs(backup.manifest), key=str)
        return [backup.id, backup.manifest, *refs]

    async def size_of(self, backup: Backup) -> int:
        """Bytes of every blob the backup consists of (shared blobs count in full)."""
        return sum(blob.size for blob in await self.blobs_of(backup))

    async def pinned(self) -> set[BlobId]:
        """Blobs garbage collection must keep: the catalog, every retained backup's blobs,
        and those of an update in flight. Raises StorageError if a backup's manifest cannot
        be read (collection then waits rather than guess)."""
        await self._load()
        keep = set(self._pending)
        if self._index is not None:
            keep.add(self._index)
        for manifest in self._pending_manifests:
            keep.add(manifest)
            keep.update(await self.manifest_blobs(manifest))
        for backup in self._backups:
            keep.update((backup.id, backup.manifest))
            keep.update(await self.manifest_blobs(backup.manifest))
        return keep

    # ----------------------------------------------------------------- writes
    async def add(self, manifest: BlobId, lsn: int, label: str = "", created: float | None = None) -> Backup:
        """Pin ``manifest`` (of state up to ``lsn``) as a new backup and return it.

        The manifest is protected from garbage collection from the call on (before the
        first await), so a caller may checkpoint and then add without a gap."""
        self._pending_manifests.append(manifest)
        mine: set[BlobId] = set()
        try:
            when = time.time() if created is None else float(created)
            data = encode_blob(record_of(manifest, int(lsn), when, label))
            mine.add(BlobId.of(data))
            self._pending.update(mine)
            record_id = await self._store.put(data)
            mine.add(record_id)
            self._pending.add(record_id)
            backup = Backup(record_id, manifest, when, int(lsn), label)
            await self.register([backup])
            return backup
        finally:
            self._pending_manifests.remove(manifest)
            self._pending -= mine

    async def register(self, backups: Iterable[Backup]) -> None:
        """Add backups whose record and blobs are already stored (import, restore)."""
        added = list(backups)
        ids = {b.id for b in added}
        await self._update(lambda current: added + [b for b in current if b.id not in ids])

    async def remove(self, ids: Iterable[BlobId]) -> list[Backup]:
        """Forget the given backups (their blobs become garbage); returns those removed."""
        doomed = set(ids)
        removed = [b for b in await self.backups() if b.id in doomed]
        if removed:
            await self._update(lambda current: [b for b in current if b.id not in doomed])
        return removed

    async def prune(self, config: BackupConfig) -> list[Backup]:
        """Apply the retention policy of ``config``; returns the backups removed."""
        backups = await self.backups()
        keep = retained(backups, config.keep_last, config.keep_daily, config.keep_weekly)
        return await self.remove(b.id for b in backups if b.id not in keep)

    async def _update(self, change: Callable[[list[Backup]], list[Backup]]) -> None:
        async with self._lock:
            await self._load()
            backups = sorted(change(list(self._backups)), key=lambda b: b.created, reverse=True)
            doc = {"format": INDEX_FORMAT, "version": VERSION, "updated": time.time(),
                   "backups": [{"id": b.id.to_bytes(), "manifest": b.manifest.to_bytes(), "created": b.created,
                                "lsn": b.lsn, "label": b.label} for b in backups]}
            data = encode_blob(doc)
            mine = {BlobId.of(data)}
            self._pending.update(mine)
            try:
                index = await self._store.put(data)
                mine.add(index)
                self._pending.add(index)
                await asyncio.to_thread(write_atomic, self._file, (index.base32() + "\n").encode())
                self._index, self._backups = index, backups
            finally:
                self._pending -= mine

    # ------------------------------------------------------------------ verify
    async def verify(self, backup: Backup, progress: Progress | None = None) -> dict[str, Any]:
        """Fetch and re-hash every blob of ``backup``: ``ok`` is True when all are present
        and intact. Never raises for a damaged blob; it is listed instead."""
        missing: list[str] = []
        corrupt: list[str] = []
        try:
            blobs = await self.blobs_of(backup)
        except BlobNotFound:
            blobs, missing = [backup.id], [str(backup.manifest)]
        except BlobCorrupt:
            blobs, corrupt = [backup.id], [str(backup.manifest)]
        total = sum(b.size for b in blobs)
        done = 0

        async def check(blob: BlobId) -> None:
            nonlocal done
            try:
                data = await self._store.get(blob)
                if blob == backup.id and decode_blob(data) != backup.record():
                    corrupt.append(str(blob))
            except BlobNotFound:
                missing.append(str(blob))
            except BlobCorrupt:
                corrupt.append(str(blob))
            done += blob.size
            if progress is not None:
                progress(done, total)

        for start in range(0, len(blobs), _PARALLEL):
            await asyncio.gather(*(check(blob) for blob in blobs[start:start + _PARALLEL]))
        return {"backup": str(backup.id), "blobs": len(blobs), "bytes": total, "missing": sorted(missing),
                "corrupt": sorted(corrupt), "ok": not missing and not corrupt}
