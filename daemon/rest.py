"""REST handlers: parse → one call into the database → serialise."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from aiohttp import web

from s5vec.index import (
    MAX_K, CollectionConfig, CollectionNotFound, Hit, RawItem, compile_filter, prepare_query,
)
from s5vec.index import scoring
from s5vec.engine import Database, Query

from .cache import QueryCache
from .config import Config
from .errors import ApiError, RequestInvalid
from .upserts import UPSERTS
from .wire import (
    DECODERS, ENCODER, MAX_BATCH, BatchIn, BatchOut, CollectionIn, DeleteIn, ItemErrorOut, MetadataIn, QueryIn,
    RecordOut, TuneIn, RecordsOut, SearchIn, SearchOut, SearchResult, VectorIn, decode_json,
)

DB: Final = web.AppKey("db", Database)
CONFIG: Final = web.AppKey("config", Config)
STARTED: Final = web.AppKey("started", float)
CACHE: Final = web.AppKey("query_cache", QueryCache)
DEFAULT: Final = "default"
VERSION: Final = "0.1.0"
routes = web.RouteTableDef()


def reply(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=ENCODER.encode(obj), status=status, content_type="application/json")


async def decode(request: web.Request, kind: type[Any]) -> Any:
    body = await request.read()
    if not body:
        raise RequestInvalid("request body is empty; send a JSON object", "body")
    return DECODERS[kind].decode(body)


def flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise RequestInvalid(f"query parameter {name} must be true or false", name)


def count_param(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    """An integer query parameter within ``[low, high]`` (no upper bound when ``high`` is None)."""
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise RequestInvalid(f"query parameter {name} must be an integer", name) from None
    if number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise RequestInvalid(f"query parameter {name} must be {bounds}", name)
    return number


def filter_param(request: web.Request) -> dict[str, Any] | None:
    """The ``?filter=<JSON object>`` query parameter, compiled once to reject a bad one (400)."""
    if "filter" not in request.query:
        return None
    try:
        spec = decode_json(request.query["filter"])
    except msgspec.DecodeError as exc:
        raise RequestInvalid(f"filter must be a JSON object ({exc})", "filter") from None
    if not isinstance(spec, dict):
        raise RequestInvalid("filter must be a JSON object", "filter")
    compile_filter(spec, request.app[DB].config.filter_limits)
    return spec


class _FilterOnly(msgspec.Struct):
    filter: msgspec.Raw = msgspec.Raw(b"null")


_FILTER_ONLY: Final = msgspec.json.Decoder(_FilterOnly)


def check_filter_bytes(db: Database, raw: bytes) -> None:
    """400 when a request body's ``filter`` is over ``engine.filter_max_bytes``, found without
    decoding it: decoding a 20 MB filter held the event loop for seconds (issue 17)."""
    limit = db.config.filter_max_bytes
    if len(raw) <= limit:
        return
    try:
        size = len(_FILTER_ONLY.decode(raw).filter)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return  # the body's own decoder names what is wrong
    if size > limit:
        raise RequestInvalid(f"the filter is {size} bytes of JSON, more than engine.filter_max_bytes = {limit}",
                             "filter")


def record_out(hit: Hit) -> RecordOut:
    vector = hit.vector.tolist() if hit.vector is not None else None
    return RecordOut(hit.id, hit.metadata or {}, hit.timestamp or 0.0, vector)


# ------------------------------------------------------------------ search (first)
# aiohttp matches the routes under one static prefix ("/api/v1/collections") in the order
# they were added: registered first, a search is matched at once instead of after nine
# other patterns (~10 us of regex matching per request).
@routes.post("/api/v1/collections/{c}/search")
async def post_search(request: web.Request) -> web.Response:
    return await search(request, request.match_info["c"])


# ------------------------------------------------------------------ health
@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness, always 200: "degraded" while the storage backend does not answer,
    checkpoints fail (writes still succeed: the WAL holds them), a WAL write failed or a
    blob is corrupt; "failing" once the WAL refuses writes until a restart."""
    db = request.app[DB]
    status = "starting" if not db.ready else db.storage.status  # "ok", "degraded" or "failing"
    return reply({
        "status": status, "version": VERSION,
        "uptime_s": round(time.time() - request.app[STARTED], 3),
        "collections": len(db.collections),
        "storage": db.storage.as_dict(),
        "wal_bytes": db.wal_bytes, "applied_lsn": db.applied_lsn, "checkpoint_lsn": db.checkpoint_lsn,
    })


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """200 once the data is loaded, also while storage is degraded: reads and (WAL-backed)
    writes are served then, so a load balancer must keep sending traffic."""
    db = request.app[DB]
    return reply({"ready": db.ready}, 200 if db.ready else 503)


# ------------------------------------------------------------- collections
@routes.get("/api/v1/collections")
async def list_collections(request: web.Request) -> web.Response:
    db = request.app[DB]
    return reply({"collections": [c.stats() for _, c in db.collection_items()]})


@routes.post("/api/v1/collections")
async def create_collection(request: web.Request) -> web.Response:
    body: CollectionIn = await decode(request, CollectionIn)
    config = CollectionConfig(
        body.name, body.dimension, body.metric, body.schema, body.hnsw.m, body.hnsw.ef_construction,
        body.hnsw.ef_search, body.recent_threshold_s, body.window_s, body.ivf.quantizer, body.ivf.nlist,
        body.ivf.nprobe, body.ivf.rerank, tuple(sorted(body.payload_indexes.items())), body.segment_records,
        body.embedding_model)
    created = await request.app[DB].create_collection(config)
    return reply(request.app[DB].collection(config.name).stats(), 201 if created else 200)


@routes.get("/api/v1/collections/{c}")
async def get_collection(request: web.Request) -> web.Response:
    return reply(request.app[DB].collection(request.match_info["c"]).stats())


@routes.delete("/api/v1/collections/{c}")
async def drop_collection(request: web.Request) -> web.Response:
    name = request.match_info["c"]
    await request.app[DB].drop_collection(name)
    return reply({"deleted": name})


# ------------------------------------------------------------------ writes
async def ensure_default(request: web.Request, dimension: int) -> None:
    db, config = request.app[DB], request.app[CONFIG]
    if DEFAULT not in db.collections and dimension > 0:
        await db.create_collection(CollectionConfig(DEFAULT, dimension, config.default_collection.metric,
                                                    config.default_collection.schema))


async def upsert_one(request: web.Request, name: str) -> web.Response:
    body: VectorIn = await decode(request, VectorIn)
    if name == DEFAULT and body.vector is not None:
        await ensure_default(request, len(body.vector))
    request.app[DB].collection(name)  # 404 before anything is queued
    # concurrent single-record requests share one validation pass, WAL record and event
    return reply({"id": await request.app[UPSERTS].upsert(name, body), "status": "upserted"}, 201)


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


async def upsert_many(request: web.Request, name: str) -> web.Response:
    body: BatchIn = await decode(request, BatchIn)
    if len(body.vectors) > MAX_BATCH:
        raise RequestInvalid(f"a batch holds at most {MAX_BATCH} vectors, got {len(body.vectors)}", "vectors")
    items, positions, errors = decode_items(body.vectors)
    first = next((item.vector for item in items if item.vector is not None), None)
    if name == DEFAULT and first is not None:
        await ensure_default(request, len(first))
    return reply(await upsert_items(request.app[DB], name, items, positions, errors))


async def get_one(request: web.Request, name: str) -> web.Response:
    hit = await request.app[DB].get(name, request.match_info["id"], flag(request, "include_vector", True))
    return reply(record_out(hit))


async def delete_one(request: web.Request, name: str) -> web.Response:
    record_id = request.match_info["id"]
    db = request.app[DB]
    db.collection(name).get(record_id, include_vector=False)  # 404 when absent
    await db.delete(name, [record_id])
    return reply({"deleted": record_id})


async def search(request: web.Request, name: str) -> web.Response:
    started = time.perf_counter()
    raw = await request.read()
    db, cache = request.app[DB], request.app[CACHE]
    check_filter_bytes(db, raw)
    try:
        coll = db.collection(name)
    except CollectionNotFound:
        if name == DEFAULT:  # nothing upserted yet: no results, but a bad search is still a 400
            body = await decode(request, SearchIn)
            check_search(db, body)
            if body.vector is not None and not all(abs(x) <= _F32_MAX for x in body.vector):
                raise RequestInvalid("vector: contains values beyond float32 range", "vector")
            return reply(SearchOut([], 0, 0.0))
        raise
    key = (name, coll.version, raw)
    if cache.enabled:
        cached = cache.get(key)
        if cached is not None:
            return reply(SearchOut(cached[0], len(cached[0]), round((time.perf_counter() - started) * 1000, 3),
                                   cached[1], True))
    body: SearchIn = await decode(request, SearchIn)
    results, partial = await execute_search(db, name, body)
    if cache.enabled and not partial:
        cache.put(key, (results, partial))
    return reply(SearchOut(results, len(results), round((time.perf_counter() - started) * 1000, 3), partial))


_F32_MAX: Final = 3.4028234663852886e38  # float32's largest value: index/records.py's bound on |x|


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


async def execute_search(db: Database, name: str, body: SearchIn) -> tuple[list[SearchResult], bool]:
    """Validate a decoded search and run it: results and whether they are partial."""
    coll = db.collection(name)
    check_search(db, body)
    if body.text is not None:  # embedded by the collection's model (EmbeddingError, 422, without one)
        query = prepare_query(coll.config, (await db.embed_query(name, body.text)).tolist())
    else:
        assert body.vector is not None  # check_search
        query = prepare_query(coll.config, body.vector)
    options = body.options
    q = Query(body.k, options.hnsw_ef, body.filter or None, options.score_threshold, options.include_metadata,
              options.include_vector, options.ivf_nprobe, options.search_recent, options.search_historical,
              options.timeout_ms, options.merge_strategy,
              tuple(options.tier_weights) if options.tier_weights else None, options.scoring)
    hits, partial = await db.search(name, query, q)
    if not all(math.isfinite(h.distance) and math.isfinite(h.score) for h in hits):
        # JSON has no inf/NaN (msgspec would write null): an explicit error instead. Only a
        # vector stored before lengths were bounded (index/records.py MAX_NORM) gets here.
        bad = next(h.id for h in hits if not (math.isfinite(h.distance) and math.isfinite(h.score)))
        raise ApiError(500, "non_finite_result", f"the distance to record {bad!r} overflows float32; "
                       "re-upsert it scaled down (at most MAX_NORM long) or delete it")
    return [SearchResult(h.id, h.distance, h.score, h.metadata if options.include_metadata else None,
                         h.vector.tolist() if h.vector is not None else None) for h in hits], partial


async def delete_records(db: Database, name: str, body: DeleteIn) -> int:
    """Delete by ids or by filter (exactly one); returns how many existed."""
    if (body.ids is None) == (body.filter is None):
        raise RequestInvalid("send exactly one of 'ids' and 'filter'", "ids")
    if body.filter is not None:
        if not body.filter:
            raise RequestInvalid("an empty filter would delete everything; drop the collection instead", "filter")
        compile_filter(body.filter, db.config.filter_limits)
        return await db.delete_matching(name, body.filter)
    return await db.delete(name, [str(i) for i in body.ids or []])


@routes.post("/api/v1/collections/{c}/vectors")
async def post_vector(request: web.Request) -> web.Response:
    return await upsert_one(request, request.match_info["c"])


@routes.post("/api/v1/collections/{c}/vectors/batch")
async def post_batch(request: web.Request) -> web.Response:
    return await upsert_many(request, request.match_info["c"])


async def post_only(request: web.Request) -> web.Response:
    """Any other method on a POST-only path below ``/vectors/``: 405 with ``Allow: POST``.
    Without it ``GET .../vectors/batch`` would fetch a record named "batch", and a 405 would
    list the methods of ``/vectors/{id}`` (aiohttp joins those of every resource the path matches)."""
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


routes.route("*", "/api/v1/collections/{c}/vectors/batch")(post_only)  # same resource as the POST above


@routes.post("/api/v1/collections/{c}/vectors/delete")
async def post_delete(request: web.Request) -> web.Response:
    check_filter_bytes(request.app[DB], await request.read())
    body: DeleteIn = await decode(request, DeleteIn)
    return reply({"deleted": await delete_records(request.app[DB], request.match_info["c"], body)})


routes.route("*", "/api/v1/collections/{c}/vectors/delete")(post_only)


@routes.post("/api/v1/collections/{c}/vectors/query")
async def query_vectors(request: web.Request) -> web.Response:
    """``GET .../vectors`` with ``filter``, ``limit``, ``offset`` and ``include_vector`` in a JSON
    body: a filter too large for a request line (a 1,000-id ``$in``) needs no query string."""
    check_filter_bytes(request.app[DB], await request.read())
    body: QueryIn = await decode(request, QueryIn)
    total, hits = await request.app[DB].find(request.match_info["c"], body.filter, body.limit, body.offset,
                                             body.include_vector)
    return reply(RecordsOut([record_out(h) for h in hits], len(hits), total))


routes.route("*", "/api/v1/collections/{c}/vectors/query")(post_only)


@routes.patch("/api/v1/collections/{c}/vectors/{id}")
async def patch_vector(request: web.Request) -> web.Response:
    """Merge ``{"metadata": patch}`` into the record's metadata (JSON Merge Patch, RFC 7396)."""
    return await put_metadata(request, merge=True)


@routes.put("/api/v1/collections/{c}/vectors/{id}")
async def put_vector(request: web.Request) -> web.Response:
    """Replace the record's metadata with ``{"metadata": ...}``; the vector is kept."""
    return await put_metadata(request, merge=False)


async def put_metadata(request: web.Request, merge: bool) -> web.Response:
    body: MetadataIn = await decode(request, MetadataIn)
    record_id = request.match_info["id"]
    await request.app[DB].update_metadata(request.match_info["c"], record_id, body.metadata, merge)
    return reply({"id": record_id, "status": "updated"})


@routes.get("/api/v1/collections/{c}/vectors")
async def list_vectors(request: web.Request) -> web.Response:
    """Records matching ``?filter=`` (all without one) in storage order: ``?limit`` (default 100,
    at most 1000), ``?offset``, ``?include_vector`` (default false)."""
    spec = filter_param(request)
    limit = count_param(request, "limit", 100, 1, MAX_K)
    offset = count_param(request, "offset", 0, 0, None)
    total, hits = await request.app[DB].find(request.match_info["c"], spec, limit, offset,
                                             flag(request, "include_vector", False))
    return reply(RecordsOut([record_out(h) for h in hits], len(hits), total))


EXPORT_CHUNK: Final = 1_000


@routes.get("/api/v1/collections/{c}/export")
async def export_records(request: web.Request) -> web.StreamResponse:
    """Every record as NDJSON in id order, streamed: one ``{"id", "metadata", "timestamp",
    "vector"}`` per line (what ``.../ingest`` reads). ``?include_vector`` (default true);
    ``?after=<id>`` resumes after that id. The ids are taken when the export starts:
    records deleted meanwhile are skipped, records added meanwhile are not included."""
    db, name = request.app[DB], request.match_info["c"]
    include_vector = flag(request, "include_vector", True)
    ids = await db.ids_after(name, request.query.get("after") or None)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           "X-S5vec-Records": str(len(ids))})
    await response.prepare(request)
    for start in range(0, len(ids), EXPORT_CHUNK):
        try:
            hits = await db.get_many(name, ids[start:start + EXPORT_CHUNK], include_vector)
        except CollectionNotFound:  # dropped meanwhile: nothing more to send
            break
        await response.write(b"".join([ENCODER.encode(record_out(h)) + b"\n" for h in hits]))
    await response.write_eof()
    return response


@routes.get("/api/v1/collections/{c}/vectors/{id}")
async def get_vector(request: web.Request) -> web.Response:
    return await get_one(request, request.match_info["c"])


@routes.delete("/api/v1/collections/{c}/vectors/{id}")
async def delete_vector(request: web.Request) -> web.Response:
    return await delete_one(request, request.match_info["c"])


# ------------------------------------------------- seed-compatible routes (default)
@routes.post("/api/v1/vectors")
async def seed_post_vector(request: web.Request) -> web.Response:
    return await upsert_one(request, DEFAULT)


@routes.post("/api/v1/vectors/batch")
async def seed_post_batch(request: web.Request) -> web.Response:
    return await upsert_many(request, DEFAULT)


routes.route("*", "/api/v1/vectors/batch")(post_only)


@routes.get("/api/v1/vectors/{id}")
async def seed_get_vector(request: web.Request) -> web.Response:
    return await get_one(request, DEFAULT)


@routes.delete("/api/v1/vectors/{id}")
async def seed_delete_vector(request: web.Request) -> web.Response:
    return await delete_one(request, DEFAULT)


@routes.post("/api/v1/search")
async def seed_search(request: web.Request) -> web.Response:
    return await search(request, DEFAULT)


# ------------------------------------------------------------------- admin
# /api/v1/admin/{checkpoint,migrate,statistics,jobs,...} live in admin.py (jobs and backups)
@routes.post("/api/v1/collections/{c}/tune")
async def tune_collection(request: web.Request) -> web.Response:
    body: TuneIn = await decode(request, TuneIn) if request.can_read_body else TuneIn()
    return reply(await request.app[DB].tune(request.match_info["c"], body.target_recall, body.sample))

