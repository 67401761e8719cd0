"""Writes of the engine: one writer task takes every queued write, logs the group with one
fsync (group commit) and applies it on the writer thread, so WAL order is apply order and
a write is acknowledged after its fsync and its apply. :meth:`Writes._apply_record` is the
one way a WAL record changes state: for the writer, for replay, and for a follower.
A part of :class:`Database` (see engine/database.py)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec
import numpy as np
from s5vec.index import (
    Batch,
    Collection,
    CollectionConfig,
    CollectionExists,
    CollectionNotFound,
    InvalidRecord,
    ItemError,
    RawItem,
    RecordNotFound,
    check_same_definition,
    prepare_batch,
)
from s5vec.index.filters import check_filter_size
from s5vec.index.records import MAX_METADATA_BYTES, check_metadata_depth, definition_conflict, merge_patch
from s5vec.index.schema import SCHEMAS
from s5vec.storage import (
    StorageError,
)

from .errors import NotWriter, ReadOnlyDatabase
from .shipping import DURABILITY
from .events import Change, deleted, metadata_replaced, upserted
from .walrecords import (
    Create,
    Delete,
    Drop,
    Lost,
    Meta,
    Upsert,
    WalRecord,
    encode_record,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
_GROUP_MAX_OPS: Final = 256

@dataclass(slots=True)
class _Op:
    """A write waiting for the writer: the record to log (a merge patch is logged merged),
    or None to stop the writer."""

    record: WalRecord | MetaPatch | None
    future: asyncio.Future[Any]
    batch: Batch | None = None  # the validated batch of an upsert (replay rebuilds it from the record)
    config: CollectionConfig | None = None
    durability: str | None = field(default_factory=DURABILITY.get)  # the submitting caller's (None: the database's)


@dataclass(frozen=True, slots=True)
class MetaPatch:
    """A merge patch of record ``id``'s metadata, turned into a :class:`Meta` record by the
    writer against the state the earlier writes of its group leave."""

    c: str
    id: str
    patch: dict[str, Any]


def _checked_metadata(config: CollectionConfig, metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` as stored for a record of ``config`` (the schema's normal form), checked
    for depth and size. Raises InvalidRecord."""
    if config.schema is not None:
        metadata = SCHEMAS[config.schema](metadata)
    check_metadata_depth(metadata)
    if len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRecord("metadata", f"is larger than {MAX_METADATA_BYTES} bytes encoded")
    return metadata


class Writes:
    """The write API and the single writer (mixed into :class:`~s5vec.engine.database.Database`)."""

    async def _submit(self, op: _Op) -> Any:
        if self.read_only:
            raise ReadOnlyDatabase(f"{self.data_dir} is open read-only: writes go to the writer")
        if not self.ready:
            raise StorageError("database is not open for writes")
        reason = self.not_writer()
        if reason is not None:
            raise NotWriter(reason)
        if op.durability == "replicated" and self._shipper is None:
            raise InvalidRecord("durability", "replicated needs WAL shipping (remote storage); this database "
                                "does not ship its WAL")
        await self._queue.put(op)
        return await asyncio.shield(op.future)

    async def create_collection(self, config: CollectionConfig) -> bool:
        """Create a collection; False if an identical one exists. Raises CollectionExists."""
        config.validate()
        existing = self.collections.get(config.name)
        if existing is not None:
            check_same_definition(existing.config, config)
            return False
        await self.embedder.check(config)  # the model loads and fits the dimension (EmbeddingError)
        future = asyncio.get_running_loop().create_future()
        return bool(await self._submit(_Op(Create(config.name, config.to_dict()), future, config=config)))

    async def drop_collection(self, name: str) -> None:
        self.collection(name)
        future = asyncio.get_running_loop().create_future()
        await self._submit(_Op(Drop(name), future))

    async def upsert(self, name: str, items: Sequence[RawItem]) -> tuple[list[str], list[ItemError]]:
        """Validate and durably upsert ``items``; returns (ids written, per-item errors).
        Items with ``text`` instead of a vector are embedded by the collection's model first."""
        coll = self.collection(name)
        if any(item.text is not None for item in items):
            items = await self.embedder.embed_items(coll.config, items)
        if len(items) > 64:
            batch, errors = await self._run(self._read_pool, prepare_batch, coll.config, items)
        else:
            batch, errors = prepare_batch(coll.config, items)
        if len(batch):
            await self.upsert_batch(name, batch)
        return batch.ids, errors

    async def embed_query(self, name: str, text: str) -> np.ndarray:
        """``text`` as a query vector by the collection's ``embedding_model`` (EmbeddingError
        naming ``text`` when it has none)."""
        rows = await self.embedder.encode(self.collection(name).config, [text])
        return rows[0]

    async def upsert_batch(self, name: str, batch: Batch) -> None:
        """Durably upsert an already validated batch."""
        future = asyncio.get_running_loop().create_future()
        record = Upsert(name, batch.ids, batch.vectors.tobytes(), batch.metadata, batch.timestamps.tobytes())
        await self._submit(_Op(record, future, batch=batch))

    async def delete(self, name: str, ids: Sequence[str]) -> int:
        """Durably delete records by id; returns how many existed."""
        coll = self.collection(name)
        # on a worker: an id lookup in sealed segments is CPU work the event loop must not do
        present = await self._run(self._get_pool, lambda: [rid for rid in dict.fromkeys(ids) if coll.contains(rid)])
        if not present:
            return 0
        future = asyncio.get_running_loop().create_future()
        return int(await self._submit(_Op(Delete(name, present), future)))

    async def update_metadata(self, name: str, record_id: str, metadata: dict[str, Any], merge: bool = False) -> None:
        """Durably replace one record's metadata, keeping its vector; with ``merge``, apply
        ``metadata`` to the current metadata as a JSON Merge Patch (RFC 7396: ``None`` deletes
        a key, objects merge recursively). The merge runs in the single writer, so concurrent
        patches of one record all land, and the WAL logs the merged result.
        Raises RecordNotFound, InvalidRecord."""
        coll = self.collection(name)
        if not isinstance(metadata, dict):
            raise InvalidRecord("metadata", "must be a JSON object")
        if merge:
            check_metadata_depth(metadata)  # bounds merge_patch's recursion; the result is checked in the writer
        else:
            metadata = _checked_metadata(coll.config, metadata)
        if not await self._run(self._get_pool, coll.contains, record_id):
            raise RecordNotFound(f"no record {record_id!r} in collection {name!r}")
        future = asyncio.get_running_loop().create_future()
        record = MetaPatch(name, record_id, metadata) if merge else Meta(name, record_id, metadata)
        result = await self._submit(_Op(record, future))
        if isinstance(result, Exception):
            raise result

    async def delete_matching(self, name: str, spec: dict[str, Any]) -> int:
        """Delete every record whose metadata matches ``spec``; returns how many."""
        coll = self.collection(name)
        check_filter_size(spec, self.config.filter_limits)
        ids = await self._run(self._read_pool, coll.ids_matching, spec)
        return await self.delete(name, ids) if ids else 0

    async def _writer(self) -> None:
        """Group commit: take every queued write, log them with one fsync, apply, resolve."""
        while True:
            ops = [await self._queue.get()]
            while len(ops) < _GROUP_MAX_OPS and not self._queue.empty():
                ops.append(self._queue.get_nowait())
            stops = [i for i, op in enumerate(ops) if op.record is None]
            stop = bool(stops)
            if stop:
                for late in ops[stops[0] + 1:]:
                    if not late.future.done():
                        late.future.set_exception(StorageError("database is shutting down"))
                ops = ops[:stops[0]]
            while self._graph_backlog() > self.config.max_pending and any(isinstance(o.record, Upsert) for o in ops):
                self._drained.clear()
                await self._drained.wait()
            if ops:
                await self._commit_group(ops)
            self._pending_changed.set()
            if stop:
                return

    async def _commit_group(self, ops: list[_Op]) -> None:
        async with self._write_lock:
            try:
                results, changes = await self._run(self._writer_pool, self._commit, ops)
            except Exception as exc:  # WAL failure: nothing was applied or acknowledged
                log.error("WAL commit of %d operations failed: %s", len(ops), exc)
                error = exc if isinstance(exc, StorageError) else StorageError(str(exc))
                results, changes = [error] * len(ops), []
                self.storage.record_write_error(error, self._wal.failed)
            else:
                if self.storage.write_error is not None and self.storage.record_write_ok():
                    log.info("WAL writes land again")
        shipper = self._shipper
        default = shipper.config.durability if shipper is not None else "local"
        fenced = self.not_writer()  # logged here, but this node may not acknowledge any more
        for op, result in zip(ops, results):
            if op.future.done():
                continue
            if fenced is not None and not isinstance(result, BaseException):
                op.future.set_exception(NotWriter(f"{fenced} (the write was not acknowledged)"))
            elif isinstance(result, BaseException):
                op.future.set_exception(result)
            elif shipper is not None and (op.durability or default) == "replicated":
                shipper.hold(self.applied_lsn, op.future, result)  # acknowledged once its chunk is stored
            else:
                op.future.set_result(result)
        self.events.publish(changes, self.applied_lsn)
        self._lsn_advanced()

    def _commit(self, ops: list[_Op]) -> tuple[list[Any], list[Change]]:
        """Writer thread: check each op against the state, log the good ones, apply them.
        Returns each op's result and the changes to publish as events."""
        names = set(self.collections)
        accepted: list[tuple[int, _Op, WalRecord]] = []
        results: list[Any] = [None] * len(ops)
        changes: list[Change] = []
        for position, op in enumerate(ops):
            record = op.record
            assert record is not None
            name = record.c
            if isinstance(record, Create):
                if name in names:
                    existing = self.collections.get(name)
                    if existing is not None and existing.config != op.config:
                        results[position] = definition_conflict(existing.config, op.config)
                    else:
                        results[position] = False
                    continue
                names.add(name)
            elif name not in names:
                results[position] = CollectionNotFound(f"collection {name!r} does not exist")
                continue
            elif isinstance(record, Drop):
                names.discard(name)
            if isinstance(record, MetaPatch):
                try:
                    record = self._merged(record, [r for _, _, r in accepted])
                except (RecordNotFound, InvalidRecord) as exc:
                    results[position] = exc
                    continue
            accepted.append((position, op, record))
        if accepted:
            payloads = [encode_record(record) for _, _, record in accepted]
            lsn = self._wal.append(payloads)
            first = lsn - len(accepted) + 1
            if self._shipper is not None:
                self._shipper.add([(first + offset, payload) for offset, payload in enumerate(payloads)])
            for offset, (position, op, record) in enumerate(accepted):
                results[position] = self._apply_record(record, op, changes, first + offset)
                self.applied_lsn = first + offset
        return results, changes

    def _merged(self, patch: MetaPatch, earlier: list[WalRecord]) -> Meta:
        """Writer thread: the :class:`Meta` record of ``patch`` (the merged metadata in full,
        so replay needs no merge), read from the state after ``earlier`` records of this group
        (logged, not yet applied). Raises RecordNotFound, InvalidRecord."""
        name, record_id = patch.c, patch.id
        current: dict[str, Any] | None = None
        for done in reversed(earlier):
            if done.c != name:
                continue
            if isinstance(done, (Drop, Create)) or (isinstance(done, Delete) and record_id in done.ids):
                raise RecordNotFound(f"no record {record_id!r} in collection {name!r}")
            if isinstance(done, Meta) and done.id == record_id:
                current = done.m
            elif isinstance(done, Upsert) and record_id in done.ids:
                current = done.m[len(done.ids) - 1 - done.ids[::-1].index(record_id)]
            if current is not None:
                break
        if current is None:
            coll = self.collections[name]
            current = coll.get(record_id, include_vector=False).metadata or {}
        merged = _checked_metadata(self.collections[name].config, merge_patch(current, patch.patch))
        return Meta(name, record_id, merged)

    def _apply_record(self, record: WalRecord, op: _Op | None = None, changes: list[Change] | None = None,
                      lsn: int = 0) -> Any:
        """Apply one WAL record (the writer's, replay's, and a follower's one way to change
        state); with ``changes``, append what it changed (for events)."""
        name = record.c
        if isinstance(record, Lost):  # an unreadable record that `s5vec wal salvage` set aside
            log.warning("WAL record %d was lost to damage; its bytes are kept in %s", lsn, record.aside)
            return None
        if isinstance(record, Create):
            config = op.config if op and op.config else CollectionConfig.from_dict(record.config)
            if name not in self.collections:
                self.collections = {**self.collections, name: Collection(config, self._scratch)}  # copy-on-write
            return True
        coll = self.collections.get(name)
        if coll is None:
            return CollectionNotFound(f"collection {name!r} does not exist")
        if isinstance(record, Drop):
            self.collections = {n: c for n, c in self.collections.items() if n != name}  # copy-on-write
            coll.close()
            shutil.rmtree(self._segment_dir / name, ignore_errors=True)
            return None
        if isinstance(record, Meta):
            try:
                coll.apply_metadata(record.id, record.m)
            except RecordNotFound as exc:
                return exc
            if changes is not None:
                hit = coll.get(record.id, include_vector=True)
                changes.append(metadata_replaced(lsn, name, hit.id, hit.vector, record.m, hit.timestamp or 0.0))
            return None
        if isinstance(record, Upsert):
            batch = op.batch if op and op.batch is not None else Batch(
                list(record.ids),
                np.frombuffer(record.v, np.float32).reshape(len(record.ids), coll.config.dimension),
                list(record.m), np.frombuffer(record.t, np.float64))
            existed = coll.apply_upsert(batch)
            if changes is not None:
                changes.append(upserted(lsn, name, batch.ids, batch.vectors, batch.metadata, batch.timestamps,
                                        existed))
            return len(batch)
        if isinstance(record, Delete):
            if changes is not None:
                present = [rid for rid in record.ids if coll.contains(rid)]
                if present:
                    changes.append(deleted(lsn, name, present))
            return coll.apply_delete(record.ids)
        raise StorageError(f"unknown WAL record {type(record).__name__}")
