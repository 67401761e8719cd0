"""Backup procedures: create, restore (in place or into a new directory), export, import.
The catalog of retained backups, and the blobs they pin, is engine state:
:mod:`s5vec.engine.backups` (its names are re-exported here).

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
import io
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any, Final

import blake3
import cbor2
from s5vec.engine import Database
from s5vec.engine.shipping import encode_chunk
from s5vec.engine.backups import (  # noqa: F401  (re-exported: the catalog is the engine's, procedures are here)
    _PARALLEL,
    VERSION,
    Backup,
    BackupCatalog,
    BackupConfig,
    BackupNotFound,
    Progress,
    record_of,
    retained,
)
from s5vec.engine.manifest import new_manifest, read_manifest, referenced_blobs  # noqa: F401  (re-exported)
from s5vec.storage import (
    BlobCorrupt,
    BlobId,
    BlobStore,
    HeadPointer,
    LocalBlobStore,
    StorageError,
    decode_blob,
    encode_blob,
    fsync_dir,
)
from s5vec.storage.datadir import DataDir, lock_directory, unlock_directory  # noqa: F401  (re-exported for the backup commands)
from s5vec.storage.wal import SEGMENT_SUFFIX, parse_frames

log = logging.getLogger(__name__)
EXPORT_FORMAT: Final = "s5vec-export"
HEADER_MEMBER: Final = "s5vec-backup.cbor"
CHECKSUM_MEMBER: Final = "CHECKSUM"


class RestoreRefused(StorageError):
    """A restore would overwrite data and was not forced, or its target is not empty."""


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

    ``db`` must have been opened by a process that runs no jobs and serves no
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
    db.detach()  # no more writes, and from the switch on no checkpoint of the old memory
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
    current_head = await store.get_head() if isinstance(store, HeadPointer) else None
    if isinstance(store, HeadPointer) and current_head is not None:
        # a shipped WAL chain belongs to the replaced state: restart it at the restored manifest
        head = await store.put(await asyncio.to_thread(encode_chunk, lsn + 1, 0, [], root, lsn, []))
        await store.set_head(head, current_head)
    return root


async def restore_raw(data_dir: Path, store: BlobStore, catalog: BackupCatalog, backup: Backup) -> dict[str, Any]:
    """Restore in place when the current state cannot even be opened (a damaged manifest or
    segment blob): the caller holds the directory's lock (:func:`lock_directory`). No
    backup of the current state is possible; the write-ahead log is kept but not replayed."""
    report = await catalog.verify(backup)
    if not report["ok"]:
        raise BlobCorrupt(f"backup {backup.id} is damaged: missing {report['missing']}, corrupt {report['corrupt']}")
    current = await store.get_root()
    lsn = await asyncio.to_thread(wal_last_lsn, DataDir(Path(data_dir)).wal)
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
