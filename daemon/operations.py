"""Transport-neutral operations: what REST, the WebSocket API, streamed ingest and the MCP
tools do with the engine, written once.

Each takes the :class:`~.services.Services` (or just the database) and already-decoded wire
structs (:mod:`.wire`), and returns plain results (wire structs, dicts, ids); errors are
raised as they are and translated by :mod:`.errors`, the one translation point. Nothing here
knows a request, a socket or a status code.

Loop-thread contract: nothing here touches a collection's live structures (its lock, its
tiers, its segment list) on the event loop. Reads go through the database's worker methods
(``get``, ``get_many``, ``find``, ``search``, ``stats``). ``db.collection(name)``
itself is a lookup in the engine's copy-on-write catalog (safe on the loop): it is used for
the 404 before any work and for a collection's immutable ``config`` and ``version``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from s5vec.engine import Database, Query
from s5vec.index import CollectionConfig, CollectionNotFound, Hit, RawItem, compile_filter, prepare_query
from s5vec.index import scoring

from .errors import ApiError, RequestInvalid
from .services import Services
from .wire import (
    DECODERS, BatchOut, CollectionIn, DeleteIn, ItemErrorOut, RecordOut, RecordsOut, SearchIn, SearchResult,
    VectorIn,
)

DEFAULT: Final = "default"
_F32_MAX: Final = 3.4028234663852886e38  # float32's largest value: index/records.py's bound on |x|
_DECODE_OFF_LOOP: Final = 64  # batches larger than this are decoded on a worker thread


def record_out(hit: Hit) -> RecordOut:
    vector = hit.vector.tolist() if hit.vector is not None else None
    return RecordOut(hit.id, hit.metadata or {}, hit.timestamp or 0.0, vector)


# ------------------------------------------------------------------ collections
async def list_collections(db: Database) -> list[dict[str, Any]]:
    """Every collection's statistics (gathered on a worker thread)."""
    return await db.stats()


async def collection_stats(db: Database, name: str) -> dict[str, Any]:
    """One collection's statistics (CollectionNotFound: 404)."""
    return (await db.stats(name))[0]


async def create_collection(db: Database, body: CollectionIn) -> tuple[dict[str, Any], bool]:
    """Create a collection (or find an identical one): its statistics and whether it is new."""
    config = CollectionConfig(
        body.name, body.dimension, body.metric, body.schema, body.hnsw.m, body.hnsw.ef_construction,
        body.hnsw.ef_search, body.recent_threshold_s, body.window_s, body.ivf.quantizer, body.ivf.nlist,
        body.ivf.nprobe, body.ivf.rerank, tuple(sorted(body.payload_indexes.items())), body.segment_records,
        body.embedding_model, body.target_recall)
    created = await db.create_collection(config)
    return await collection_stats(db, config.name), created


async def drop_collection(db: Database, name: str) -> None:
    await db.drop_collection(name)


async def ensure_default(services: Services, dimension: int) -> None:
    """Create the ``default`` collection on its first write (the seed API's collection)."""
    db, config = services.db, services.config
    if DEFAULT not in db.collections and dimension > 0:
        await db.create_collection(CollectionConfig(DEFAULT, dimension, config.default_collection.metric,
                                                    config.default_collection.schema))


async def tune(db: Database, name: str, target_recall: float | None, sample: int) -> dict[str, Any]:
    return await db.tune(name, target_recall, sample)


# ----------------------------------------------------------------------- writes
async def upsert_one(services: Services, name: str, body: VectorIn) -> str:
    """Durably upsert one record (batched with the other single upserts of this loop
    iteration); returns its id. Raises the record's error (400/422)."""
    if name == DEFAULT and body.vector is not None:
        await ensure_default(services, len(body.vector))
    services.db.collection(name)  # 404 before anything is queued
    return await services.upserts.upsert(name, body)


def decode_items(raws: Sequence[bytes | msgspec.Raw]) -> tuple[list[RawItem], list[int], list[ItemErrorOut]]:
    """Decode each record on its own, so one bad item does not sink the others: the good
    ones, their positions in ``raws``, and an error per bad one."""
    decoder = DECODERS[VectorIn]
    items: list[RawItem] = []
    positions: list[int] = []
    errors: list[ItemErrorOut] = []
    for index, raw in enumerate(raws):
        try:
            item: VectorIn = decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            errors.append(ItemErrorOut(index, None, {"code": "invalid_request", "message": str(exc)}))
            continue
        items.append(RawItem(item.id, item.vector, item.metadata, item.timestamp, item.text))
        positions.append(index)
    return items, positions, errors


async def decode_items_off_loop(raws: Sequence[bytes | msgspec.Raw],
                                ) -> tuple[list[RawItem], list[int], list[ItemErrorOut]]:
    """:func:`decode_items`, on a worker thread for more than a few records."""
    if len(raws) > _DECODE_OFF_LOOP:
        return await asyncio.to_thread(decode_items, raws)
    return decode_items(raws)


async def upsert_items(db: Database, name: str, items: list[RawItem], positions: list[int],
                       errors: list[ItemErrorOut]) -> BatchOut:
    """Durably upsert decoded items; per-item errors (by position) join ``errors``."""
    db.collection(name)
    written: list[str] = []
    if items:
        written, item_errors = await db.upsert(name, items)
        errors.extend(ItemErrorOut(positions[e.index], e.id, {"code": e.code, "message": e.message})
                      for e in item_errors)
    errors.sort(key=lambda e: e.index)
    return BatchOut(len(written), len(errors), errors)


async def upsert_batch(services: Services, name: str, raws: Sequence[bytes | msgspec.Raw]) -> BatchOut:
    """Durably upsert records given as undecoded JSON objects (the caller bounds how many):
    each is decoded on its own, bad ones are reported by position, the rest are written."""
    db = services.db
    if name != DEFAULT:
        db.collection(name)  # 404 before decoding
    items, positions, errors = await decode_items_off_loop(raws)
    if name == DEFAULT:
        first = next((item.vector for item in items if item.vector is not None), None)
        if first is not None:
            await ensure_default(services, len(first))
    return await upsert_items(db, name, items, positions, errors)


async def delete(db: Database, name: str, body: DeleteIn) -> int:
    """Delete by ids or by filter (exactly one); returns how many existed (CollectionNotFound
    after the body's own checks)."""
    if (body.ids is None) == (body.filter is None):
        raise RequestInvalid("send exactly one of 'ids' and 'filter'", "ids")
    if body.filter is not None:
        if not body.filter:
            raise RequestInvalid("an empty filter would delete everything; drop the collection instead", "filter")
        compile_filter(body.filter, db.config.filter_limits)
        return await db.delete_matching(name, body.filter)
    return await db.delete(name, [str(i) for i in body.ids or []])


async def delete_one(db: Database, name: str, record_id: str) -> None:
    """Delete one record; RecordNotFound (404) when it is absent."""
    await db.get(name, record_id, False)  # the existence check on a worker, not under the lock on the loop
    await db.delete(name, [record_id])


async def update_metadata(db: Database, name: str, record_id: str, metadata: dict[str, Any], merge: bool) -> None:
    """Replace a record's metadata, or merge a JSON Merge Patch into it; the vector is kept."""
    await db.update_metadata(name, record_id, metadata, merge)


# ------------------------------------------------------------------------ reads
async def get(db: Database, name: str, record_id: str, include_vector: bool) -> RecordOut:
    return record_out(await db.get(name, record_id, include_vector))


async def get_many(db: Database, name: str, ids: Sequence[str], include_vector: bool,
                   ) -> tuple[list[RecordOut], list[str]]:
    """The records among ``ids`` that exist, in that order, and the ids that do not."""
    hits = await db.get_many(name, ids, include_vector)
    found = {h.id for h in hits}
    return [record_out(h) for h in hits], [i for i in ids if i not in found]


async def find(db: Database, name: str, spec: dict[str, Any] | None, limit: int, offset: int,
               include_vector: bool) -> RecordsOut:
    """A page of the records matching ``spec`` (all when None) and how many match."""
    total, hits = await db.find(name, spec, limit, offset, include_vector)
    return RecordsOut([record_out(h) for h in hits], len(hits), total)


def check_search(db: Database, body: SearchIn) -> None:
    """The checks of a search that need no collection: 400 (RequestInvalid, InvalidFilter)."""
    if body.text is not None and body.vector is not None:
        raise RequestInvalid("send either 'vector' or 'text', not both", "text")
    if body.text is None and body.vector is None:
        raise RequestInvalid("send 'vector' (or 'text' on a collection with an embedding_model)", "vector")
    if body.filter:  # a malformed or too large filter is a 400 before any work (bounded: limits first)
        compile_filter(body.filter, db.config.filter_limits)
    options = body.options
    if options.tier_weights is not None and options.merge_strategy != "weighted":
        raise RequestInvalid("tier_weights only apply with merge_strategy 'weighted'", "options.tier_weights")
    if options.scoring is not None:
        scoring.validate(options.scoring)


async def search(db: Database, name: str, body: SearchIn) -> tuple[list[SearchResult], bool]:
    """Validate a decoded search and run it: results and whether they are partial. A search of
    the ``default`` collection before anything was upserted has no results (but a bad one is
    still a 400)."""
    try:
        coll = db.collection(name)
    except CollectionNotFound:
        if name != DEFAULT:
            raise
        check_search(db, body)
        if body.vector is not None and not all(abs(x) <= _F32_MAX for x in body.vector):
            raise RequestInvalid("vector: contains values beyond float32 range", "vector")
        return [], False
    check_search(db, body)
    if body.text is not None:  # embedded by the collection's model (EmbeddingError, 422, without one)
        query = prepare_query(coll.config, (await db.embed_query(name, body.text)).tolist())
    else:
        assert body.vector is not None  # check_search
        query = prepare_query(coll.config, body.vector)
    options = body.options
    q = Query(k=body.k, ef=options.hnsw_ef, filter=body.filter or None, score_threshold=options.score_threshold,
              include_metadata=options.include_metadata, include_vector=options.include_vector,
              nprobe=options.ivf_nprobe, rerank=options.ivf_rerank, recent=options.search_recent, historical=options.search_historical,
              timeout_ms=options.timeout_ms, merge=options.merge_strategy,
              weights=tuple(options.tier_weights) if options.tier_weights else None, scoring=options.scoring)
    hits, partial = await db.search(name, query, q)
    if not all(math.isfinite(h.distance) and math.isfinite(h.score) for h in hits):
        # JSON has no inf/NaN (msgspec would write null): an explicit error instead. Only a
        # vector stored before lengths were bounded (index/records.py MAX_NORM) gets here.
        bad = next(h.id for h in hits if not (math.isfinite(h.distance) and math.isfinite(h.score)))
        raise ApiError(500, "non_finite_result", f"the distance to record {bad!r} overflows float32; "
                       "re-upsert it scaled down (at most MAX_NORM long) or delete it")
    return [SearchResult(h.id, h.distance, h.score, h.metadata if options.include_metadata else None,
                         h.vector.tolist() if h.vector is not None else None) for h in hits], partial
