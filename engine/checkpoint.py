"""Checkpoints of the engine: every collection as blobs plus a manifest, the root pointer
swung by compare-and-set, WAL segments the manifest covers dropped, unreferenced blobs
collected; failures back off and the WAL keeps every write meanwhile. A part of
:class:`Database` (see engine/database.py); :mod:`s5vec.ops.jobs` decides when."""

from __future__ import annotations

import logging
import time
from typing import Any, Final, TypeVar

from s5vec.storage import (
    BlobId,
    BlobNotFound,
    RootConflict,
    StorageError,
    StorageFull,
    encode_blob,
)

from .errors import NotWriter, ReadOnlyDatabase
from .health import Probe
from .manifest import (
    new_manifest,
    read_manifest,
    referenced_blobs,
    write_snapshot,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
_RETRY_FIRST_S: Final = 1.0


class Checkpointing:
    """Checkpoints and garbage collection (mixed into :class:`~s5vec.engine.database.Database`)."""

    @property
    def wal_bytes(self) -> int:
        return self._wal.size_bytes

    @property
    def wal_syncs(self) -> int:
        """fsync calls made by the WAL since open (group commit makes this < writes)."""
        return self._wal.syncs

    async def checkpoint_due(self) -> bool:
        """One tick of the checkpointer (call about once a second): probe a remote backend
        every ``storage_probe_s``, then say whether a checkpoint is due: after
        ``checkpoint_interval_s``, past ``checkpoint_wal_bytes`` of WAL, or, after a
        failure, once its exponential backoff has passed."""
        now = time.time()
        if now >= self._next_probe:
            self._next_probe = now + self.config.storage_probe_s
            await self.probe_storage()
        if self.storage.consecutive_failures:
            return now >= self._retry_at
        return (now - self.last_checkpoint >= self.config.checkpoint_interval_s
                or self.wal_bytes >= self.config.checkpoint_wal_bytes)

    async def probe_storage(self) -> bool:
        """Ask the backend whether it answers (stores without ``ping`` always do); records
        the answer in ``self.storage`` and logs a change once."""
        if not isinstance(self.store, Probe):
            return True
        try:
            ok = await self.store.ping()
        except Exception as exc:  # a probe must never take the checkpointer down
            ok = False
            log.debug("storage probe raised %s", type(exc).__name__)
        if self.storage.record_probe(ok):
            if ok:
                log.info("storage backend (%s) answers again", self.storage.mode)
            else:
                log.warning("storage backend (%s) does not answer; writes continue into the WAL, "
                            "checkpoints wait", self.storage.mode)
        return ok

    def _checkpoint_failed(self, exc: BaseException) -> None:
        if self.storage.record_failure(exc):
            log.warning("checkpoint failed, root pointer unchanged, WAL kept; retrying with backoff: %s",
                        self.storage.last_error)
        else:
            log.debug("checkpoint failed again (%d in a row): %s", self.storage.consecutive_failures,
                      self.storage.last_error)
        delay = min(self.config.checkpoint_retry_max_s,
                    _RETRY_FIRST_S * 2 ** min(self.storage.consecutive_failures - 1, 16))
        self._retry_at = time.time() + delay

    async def checkpoint(self) -> BlobId | None:
        """Persist every collection as blobs + a manifest, swing the root, trim the WAL.

        Raises StorageError (BackendUnavailable, ...) when the backend fails; then the root
        is not moved, the WAL is kept, and ``self.storage`` records the failure."""
        if self.detached:
            raise StorageError("the data directory was restored underneath this database; reopen it")
        if self.read_only:
            raise ReadOnlyDatabase(f"{self.data_dir} is open read-only: the writer checkpoints")
        unchanged = self.root
        started = time.perf_counter()
        try:
            try:
                manifest_id = await self._checkpoint()
            except StorageFull:
                # Unreferenced blobs (old snapshots, a failed checkpoint's leftovers) wait
                # gc_grace_s; on a full disk they are what blocks the checkpoint that would
                # let the WAL shrink. Delete them now and try once more.
                if not await self._free_space():
                    raise
                manifest_id = await self._checkpoint()
        except Exception as exc:
            self.metrics.job_finished("checkpoint", "failure", time.perf_counter() - started)
            if isinstance(exc, StorageError):
                self._checkpoint_failed(exc)
            raise
        if manifest_id == unchanged:
            self.metrics.job_finished("checkpoint", "skipped", time.perf_counter() - started)
            return manifest_id  # nothing new to store: the backend was not asked, so it proved nothing
        self.metrics.job_finished("checkpoint", "success", time.perf_counter() - started)
        if self.storage.record_success(self.last_checkpoint):
            log.info("checkpoint succeeded: storage backend (%s) is healthy again", self.storage.mode)
        return manifest_id

    async def _checkpoint(self) -> BlobId | None:
        async with self._checkpoint_lock:
            async with self._write_lock:
                lsn = self.applied_lsn
                token = self._state_token()
                if token == self._checkpoint_token and self.root is not None:
                    self.last_checkpoint = time.time()
                    return self.root
                await self._run(self._writer_pool, self._wal.rotate)
                collections = dict(self.collections)
                snaps = {name: await self._run(self._io, coll.snapshot) for name, coll in collections.items()}
            started = time.time()
            entries = {name: await write_snapshot(self.store, snap, self._segment_refs)
                       for name, snap in snaps.items()}
            del snaps
            manifest = new_manifest(lsn, entries, self.root)
            blob = await self._run(self._io, encode_blob, manifest)
            manifest_id = await self.store.put(blob)
            await self._swing_root(manifest_id, lsn)
            previous, self.root = self.root, manifest_id
            self.checkpoint_lsn, self.last_checkpoint = lsn, time.time()
            self._checkpoint_token = token
            if self._shipper is not None:
                self._shipper.folded(manifest_id, lsn)
            try:
                await self._run(self._writer_pool, self._wal.truncate_through, lsn)
            except StorageError as exc:  # the checkpoint stands; the next one drops these segments
                log.warning("dropping WAL segments covered by checkpoint %s failed: %s", manifest_id, exc)
            try:
                await self._collect_garbage(manifest_id)
            except StorageError as exc:  # the checkpoint stands; unreferenced blobs wait for the next one
                log.warning("garbage collection after checkpoint %s failed: %s", manifest_id, exc)
            log.info("checkpoint at LSN %d: manifest %s (%.2fs)", lsn, manifest_id, time.time() - started)
            self.events.publish_job("checkpoint_completed", {"lsn": lsn, "manifest": str(manifest_id),
                                                             "seconds": round(time.time() - started, 3)})
            del previous
            return manifest_id

    def _state_token(self) -> tuple[Any, ...]:
        """Changes whenever a checkpoint would store something new: writes (LSN), graph
        progress, migrations and tuning (which do not go through the WAL)."""
        return (self.applied_lsn, tuple((name, c.recent.hnsw_upto, tuple(s.seq for s in c.segments),
                                         len(c.recent.parked),
                                         tuple(sorted(c.tuned.items())), id(c.recent))
                                        for name, c in sorted(self.collections.items())))

    async def _swing_root(self, manifest_id: BlobId, lsn: int) -> None:
        """Compare-and-set the root from ``self.root`` to ``manifest_id``.

        A swap that timed out may have landed although it was not acknowledged: the next
        one then finds the root at a manifest built by this database on the same root
        (its ``previous`` is ``self.root``, its LSN at most ``lsn``) and swaps from it.
        Raises NotWriter when this node was replaced or its lease ran out: its state may hold
        writes the new writer's history does not."""
        fenced = self.not_writer()
        if fenced is not None:
            raise NotWriter(f"{fenced}; the root stays where it is")
        try:
            await self.store.set_root(manifest_id, self.root)
            return
        except RootConflict:
            current = await self.store.get_root()
            if current is None or current == self.root:
                raise
            manifest = await read_manifest(self.store, current)
            previous = manifest.get("previous")
            ours = (BlobId.from_bytes(previous) if previous else None) == self.root and int(manifest["lsn"]) <= lsn
            if not ours:
                raise
        log.info("root pointer was already at %s (an unacknowledged earlier swap); moving on", current)
        await self.store.set_root(manifest_id, current)

    async def _collect_garbage(self, current: BlobId, grace_s: float | None = None) -> int:
        """Delete blobs that none of the last ``keep_manifests`` manifests, no retained
        backup and not the shipped WAL chain reference, once they have been unreferenced for
        ``gc_grace_s``. Runs under the checkpoint lock (a checkpoint in flight has stored
        blobs no manifest names yet) and the shipper's lock (so does a shipping round)."""
        if self._shipper is None:
            return await self._collect_unreferenced(current, grace_s, set())
        async with self._shipper.lock:
            return await self._collect_unreferenced(current, grace_s, self._shipper.referenced())

    async def _collect_unreferenced(self, current: BlobId, grace_s: float | None, keep: set[BlobId]) -> int:
        manifest_id: BlobId | None = current
        for _ in range(self.config.keep_manifests):
            if manifest_id is None:
                break
            try:
                manifest = await read_manifest(self.store, manifest_id)
            except BlobNotFound:
                if manifest_id == current:
                    raise
                break  # an older manifest is gone already (a restored directory starts a new chain)
            keep.add(manifest_id)
            keep.update(referenced_blobs(manifest))
            previous = manifest.get("previous")
            manifest_id = BlobId.from_bytes(previous) if previous else None
        keep.update(await self.backups.pinned())
        now = time.time()
        unreferenced: dict[BlobId, float] = {}
        removed = 0
        for blob_id in await self.store.list():
            if blob_id in keep:
                continue
            since = self._unreferenced.get(blob_id, now)
            if now - since >= (self.gc_grace_s if grace_s is None else grace_s):
                await self.store.delete(blob_id)
                removed += 1
            else:
                unreferenced[blob_id] = since
        self._unreferenced = unreferenced
        self.last_gc = {"finished": now, "removed": removed, "waiting": len(unreferenced), "kept": len(keep)}
        return removed

    async def _free_space(self) -> int:
        """Delete every unreferenced blob now, ignoring ``gc_grace_s`` (the disk is full);
        returns how many went."""
        async with self._checkpoint_lock:
            if self.root is None:
                return 0
            removed = await self._collect_garbage(self.root, grace_s=0.0)
        if removed:
            log.warning("disk full: deleted %d unreferenced blobs without waiting gc_grace_s", removed)
        return removed

    async def collect_garbage(self) -> int:
        """Run garbage collection now (between checkpoints); returns how many blobs went."""
        async with self._checkpoint_lock:
            if self.root is None:
                return 0
            return await self._collect_garbage(self.root)
