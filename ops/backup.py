"""Backups: immutable, content-addressed snapshots of a data directory, and their catalog.

A backup is one small record blob ``{manifest, lsn, created, label}``; the record's blob id
is the backup's id, so a backup cannot change without changing its name. The catalog is
one index blob listing every retained backup; the data directory's ``BACKUPS`` file names
it and is replaced atomically. A backup pins its manifest and every blob the manifest
references: the database's garbage collection keeps whatever :meth:`BackupCatalog.pinned`
returns.

Restore never edits blobs. In place it writes a new manifest holding the backup's
collections at the directory's current LSN (so the write-ahead log, whose records are
all older, replays nothing) and swings the root pointer to it: that single atomic
replace is the switch, so an interrupted restore leaves the old state as it was. Into a
new directory it copies the backup's blobs into a staging directory beside the target and
renames it into place last.

Export writes one tar file (the blobs are already compressed): a CBOR header naming the
backup and its blobs, ``blobs/<id>`` members, and a ``CHECKSUM`` member (BLAKE3 of the
header and every blob in order); import re-hashes every blob and the checksum before it
adds the backup to the target's catalog.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import blake3
import cbor2
from s5vec.storage import (
    BlobCorrupt,
    BlobId,
    BlobNotFound,
    BlobStore,
    LocalBlobStore,
    StorageError,
    decode_blob,
    encode_blob,
    fsync_dir,
    write_atomic,
)
from s5vec.storage.wal import SEGMENT_SUFFIX, parse_frames

from .datadir import lock_directory, unlock_directory  # noqa: F401  (re-exported for the backup commands)
from .manifest import new_manifest, read_manifest, referenced_blobs

if TYPE_CHECKING:
    from .database import Database

log = logging.getLogger(__name__)
BACKUPS_FILE: Final = "BACKUPS"
RECORD_FORMAT: Final = "s5vec-backup"
INDEX_FORMAT: Final = "s5vec-backups"
EXPORT_FORMAT: Final = "s5vec-export"
VERSION: Final = 1
HEADER_MEMBER: Final = "s5vec-backup.cbor"
CHECKSUM_MEMBER: Final = "CHECKSUM"
_PARALLEL: Final = 8  # blobs fetched at once while verifying or exporting
Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as long work goes on."""


class BackupNotFound(StorageError):
    """No retained backup matches the given id, prefix or time."""


class RestoreRefused(StorageError):
    """A restore would overwrite data and was not forced, or its target is not empty."""


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
        self._file = Path(data_dir) / BACKUPS_FILE
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


# ---------------------------------------------------------------------- create
async def create_backup(db: Database, label: str = "", created: float | None = None) -> Backup:
    """Checkpoint ``db`` and pin the manifest as a new backup."""
    manifest = await db.checkpoint()
    if manifest is None:
        raise StorageError("the checkpoint produced no manifest")
    return await db.backups.add(manifest, db.checkpoint_lsn, label, created)


# --------------------------------------------------------------------- restore
def has_data(db: Database) -> bool:
    """Whether the directory holds any state a restore would replace."""
    return db.root is not None or db.applied_lsn > 0 or bool(db.collections)


async def restore_in_place(db: Database, backup: Backup, force: bool = False,
                           safety_label: str = "pre-restore") -> dict[str, Any]:
    """Make ``backup`` the state of ``db``'s data directory.

    ``db`` must have been opened with ``scheduled=True`` by a process that serves no
    requests; afterwards it refuses writes and checkpoints (its memory holds the old
    state) and only closing it is left. Raises RestoreRefused when the directory holds data and
    ``force`` is not set. With data, the current state is checkpointed and kept as a
    backup labelled ``safety_label`` first. An error before the root pointer moves
    leaves the directory exactly as it was."""
    report = await db.backups.verify(backup)
    if not report["ok"]:
        raise BlobCorrupt(f"backup {backup.id} is damaged: missing {report['missing']}, corrupt {report['corrupt']}")
    safety = None
    if has_data(db):
        if not force:
            raise RestoreRefused("the data directory holds data: pass force (--force) to replace it "
                                 "(a backup of the current state is kept), or restore into a new directory")
        safety = await create_backup(db, safety_label)
    db.ready = False  # no more writes, and from the switch on no checkpoint of the old memory
    db.detached = True
    root = await install(db.store, backup, max(db.applied_lsn, backup.lsn), db.root)
    log.info("restored backup %s (LSN %d) into %s as manifest %s", backup.id, backup.lsn, db.data_dir, root)
    return {"restored": backup.as_dict(), "manifest": str(root), "safety_backup": safety.as_dict() if safety else None}


async def install(store: BlobStore, backup: Backup, lsn: int, expected_root: BlobId | None) -> BlobId:
    """Write a manifest holding ``backup``'s collections at ``lsn`` (at least every LSN the
    directory's write-ahead log holds) and compare-and-set the root to it: the one atomic
    step of a restore."""
    source = await read_manifest(store, backup.manifest)
    manifest = new_manifest(lsn, source["collections"], expected_root)
    manifest["restored_from"] = backup.id.to_bytes()
    root = await store.put(await asyncio.to_thread(encode_blob, manifest))
    await store.set_root(root, expected_root)
    return root


async def restore_raw(data_dir: Path, store: BlobStore, catalog: BackupCatalog, backup: Backup) -> dict[str, Any]:
    """Restore in place when the current state cannot even be opened (a damaged manifest or
    segment blob): the caller holds the directory's lock (:func:`lock_directory`). No
    backup of the current state is possible; the write-ahead log is kept but not replayed."""
    report = await catalog.verify(backup)
    if not report["ok"]:
        raise BlobCorrupt(f"backup {backup.id} is damaged: missing {report['missing']}, corrupt {report['corrupt']}")
    current = await store.get_root()
    lsn = await asyncio.to_thread(wal_last_lsn, Path(data_dir) / "wal")
    if current is not None:
        try:
            lsn = max(lsn, int((await read_manifest(store, current))["lsn"]))
        except StorageError as exc:
            log.warning("current manifest %s is unreadable (%s); taking the LSN from the write-ahead log", current, exc)
    root = await install(store, backup, max(lsn, backup.lsn), current)
    return {"restored": backup.as_dict(), "manifest": str(root), "safety_backup": None}


def wal_last_lsn(wal_dir: Path) -> int:
    """The highest LSN the segments in ``wal_dir`` hold or start after (0 if none); read only."""
    last = 0
    for path in Path(wal_dir).glob(f"*{SEGMENT_SUFFIX}"):
        try:
            first = int(path.stem)
        except ValueError:
            continue
        records, _ = parse_frames(path.read_bytes(), first)
        last = max(last, first - 1, records[-1][0] if records else 0)
    return last


async def restore_to_directory(store: BlobStore, catalog: BackupCatalog, backup: Backup, target: Path,
                               progress: Progress | None = None) -> dict[str, Any]:
    """Make ``target`` (absent or an empty directory) a data directory holding ``backup``:
    its blobs are copied (and re-hashed) into a staging directory beside it, which is
    renamed into place last. Raises RestoreRefused if ``target`` holds anything."""
    target = Path(target).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RestoreRefused(f"{target} is not an empty directory")
    staging = target.with_name(f".{target.name}.restoring-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        local = LocalBlobStore(staging)
        blobs = await catalog.blobs_of(backup)
        total = sum(b.size for b in blobs)
        done = 0
        for start in range(0, len(blobs), _PARALLEL):
            chunk = blobs[start:start + _PARALLEL]
            for data in await asyncio.gather(*(store.get(blob) for blob in chunk)):
                await local.put(data)
                done += len(data)
                if progress is not None:
                    progress(done, total)
        await BackupCatalog(staging, local).register([backup])
        root = await install(local, backup, backup.lsn, None)
        await asyncio.to_thread(_swap_in, staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"restored": backup.as_dict(), "manifest": str(root), "directory": str(target), "bytes": total}


def _swap_in(staging: Path, target: Path) -> None:
    os.replace(staging, target)  # an empty target directory is replaced atomically
    fsync_dir(target.parent)


# -------------------------------------------------------------- export/import
async def export_backup(store: BlobStore, catalog: BackupCatalog, backup: Backup, path: Path,
                        progress: Progress | None = None) -> dict[str, Any]:
    """Write ``backup`` to the portable file ``path`` (replaced atomically); every blob
    is re-hashed as it is read. Returns what was written."""
    path = Path(path)
    blobs = await catalog.blobs_of(backup)
    total = sum(b.size for b in blobs)
    header = cbor2.dumps({"format": EXPORT_FORMAT, "version": VERSION,
                          "backup": {"id": backup.id.to_bytes(), **backup.record()},
                          "blobs": [b.to_bytes() for b in blobs], "bytes": total}, canonical=True)
    digest = blake3.blake3(header)
    partial = path.with_name(f".{path.name}.partial")
    tar = await asyncio.to_thread(tarfile.open, partial, "w")
    try:
        await asyncio.to_thread(_add_member, tar, HEADER_MEMBER, header)
        done = 0
        for start in range(0, len(blobs), _PARALLEL):
            chunk = blobs[start:start + _PARALLEL]
            for blob, data in zip(chunk, await asyncio.gather(*(store.get(b) for b in chunk))):
                digest.update(data)
                await asyncio.to_thread(_add_member, tar, f"blobs/{blob}", data)
                done += len(data)
                if progress is not None:
                    progress(done, total)
        await asyncio.to_thread(_add_member, tar, CHECKSUM_MEMBER, f"blake3 {digest.hexdigest()}\n".encode())
        await asyncio.to_thread(tar.close)
        await asyncio.to_thread(_fsync_replace, partial, path)
    except BaseException:
        tar.close()
        partial.unlink(missing_ok=True)
        raise
    return {"backup": backup.as_dict(), "file": str(path), "blobs": len(blobs), "bytes": total,
            "file_bytes": path.stat().st_size}


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = 0  # identical backups export to identical files
    tar.addfile(info, io.BytesIO(data))


def _fsync_replace(partial: Path, path: Path) -> None:
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, path)
    fsync_dir(path.parent.absolute())


async def import_backup(path: Path, store: BlobStore, catalog: BackupCatalog,
                        progress: Progress | None = None) -> Backup:
    """Load an exported backup into ``store`` and add it to ``catalog``; every blob and the
    file checksum are verified first (BlobCorrupt otherwise, and the catalog is untouched)."""
    tar = await asyncio.to_thread(tarfile.open, Path(path), "r|")
    try:
        name, header = await asyncio.to_thread(_next_member, tar)
        if name != HEADER_MEMBER:
            raise BlobCorrupt(f"{path} is not an s5vec backup export (first member {name!r})")
        doc = _decode_header(header)
        backup = Backup.from_entry(doc["backup"])
        blobs = [BlobId.from_bytes(raw) for raw in doc["blobs"]]
        total = sum(b.size for b in blobs)
        digest = blake3.blake3(header)
        done = 0
        for expected in blobs:
            name, data = await asyncio.to_thread(_next_member, tar)
            if name != f"blobs/{expected}":
                raise BlobCorrupt(f"{path}: expected blobs/{expected}, found {name!r} (truncated or reordered?)")
            if await asyncio.to_thread(BlobId.of, data) != expected:
                raise BlobCorrupt(f"{path}: blob {expected} does not match its content address")
            digest.update(data)
            await store.put(data)
            done += len(data)
            if progress is not None:
                progress(done, total)
        name, trailer = await asyncio.to_thread(_next_member, tar)
        if name != CHECKSUM_MEMBER or trailer.decode(errors="replace").split() != ["blake3", digest.hexdigest()]:
            raise BlobCorrupt(f"{path}: checksum does not match (the file is damaged)")
    except (tarfile.TarError, EOFError) as exc:
        raise BlobCorrupt(f"{path} is not a readable backup export: {exc}") from None
    finally:
        tar.close()
    record = decode_blob(await store.get(backup.id))
    if record != backup.record():
        raise BlobCorrupt(f"{path}: the backup record disagrees with the header")
    await catalog.register([backup])
    return backup


def _next_member(tar: tarfile.TarFile) -> tuple[str, bytes]:
    member = tar.next()
    if member is None:
        raise BlobCorrupt("the export ends early")
    handle = tar.extractfile(member)
    if handle is None:
        raise BlobCorrupt(f"member {member.name!r} is not a file")
    return member.name, handle.read()


def _decode_header(header: bytes) -> dict[str, Any]:
    try:
        doc = cbor2.loads(header)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise BlobCorrupt(f"export header is not CBOR: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT or doc.get("version") != VERSION:
        raise BlobCorrupt("export header has an unknown format or version")
    entry = doc.get("backup")
    if not isinstance(entry, dict) or not isinstance(doc.get("blobs"), list):
        raise BlobCorrupt("export header lacks the backup or its blobs")
    return doc
