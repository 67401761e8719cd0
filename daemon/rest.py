"""REST handlers: parse → one call into :mod:`.operations` → serialise.

The routes come in two tables: ``read_routes`` (searches, reads, health; all a read-only
follower mounts) and ``write_routes`` (everything that changes data); the admin routes are
in :mod:`.admin`. :func:`.app.create_app` mounts them, the read table first (see the search
route below).
A record id cannot be ``batch``, ``delete`` or ``query`` (``{id}`` excludes them), so
``GET .../vectors/batch`` is a 405 naming POST, not a read of a record called "batch", and
in a follower without the write table ``POST .../vectors/batch`` is a 404.
"""

from __future__ import annotations

import time
from typing import Final

from aiohttp import web

from s5vec.index import MAX_K, CollectionNotFound

from . import operations, replication
from .errors import RequestInvalid
from .operations import DEFAULT
from .params import check_filter_bytes, count_param, decode, filter_param, flag, reply
from .services import SERVICES, VERSION
from .wire import (
    ENCODER, MAX_BATCH, BatchIn, CollectionIn, DeleteIn, MetadataIn, QueryIn, SearchIn, SearchOut, TuneIn, VectorIn,
)

__all__ = ["VERSION", "read_routes", "write_routes"]
read_routes = web.RouteTableDef()
write_routes = web.RouteTableDef()
_ID: Final = "{id:(?!(?:batch|delete|query)$)[^/]+}"  # a record id: not one of the POST-only names


# ------------------------------------------------------------------ search (first)
# aiohttp matches the routes under one static prefix ("/api/v1/collections") in the order
# they were added: registered first (the read table is mounted first), a search is matched
# at once instead of after nine other patterns (~10 us of regex matching per request).
@read_routes.post("/api/v1/collections/{c}/search")
async def post_search(request: web.Request) -> web.Response:
    return await search(request, request.match_info["c"])


async def search(request: web.Request, name: str) -> web.Response:
    """The hot path: the answer comes from the query cache, keyed on the raw body and the
    collection's version, before the body is decoded."""
    started = time.perf_counter()
    raw = await request.read()
    services = request.app[SERVICES]
    db, cache = services.db, services.cache
    check_filter_bytes(db, raw)
    try:
        version = db.collection(name).version  # a 404 before the body is decoded
    except CollectionNotFound:
        if name != DEFAULT:
            raise
        version = None  # nothing upserted yet: operations.search answers (no results, or a 400)
    key = None
    if version is not None and cache.enabled:
        key = (name, version, raw)
        cached = cache.get(key)
        if cached is not None:
            return reply(SearchOut(cached[0], len(cached[0]), round((time.perf_counter() - started) * 1000, 3),
                                   cached[1], True))
    body: SearchIn = await decode(request, SearchIn)
    results, partial = await operations.search(db, name, body)
    if key is not None and not partial:
        cache.put(key, (results, partial))
    return reply(SearchOut(results, len(results), round((time.perf_counter() - started) * 1000, 3), partial))


# ------------------------------------------------------------------ health
@read_routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness, always 200: "degraded" while the storage backend does not answer,
    checkpoints fail (writes still succeed: the WAL holds them), a WAL write failed or a
    blob is corrupt; "failing" once the WAL refuses writes until a restart."""
    services = request.app[SERVICES]
    db = services.db
    status = "starting" if not db.ready else db.storage.status  # "ok", "degraded" or "failing"
    return reply({
        "status": status, "version": VERSION,
        "uptime_s": round(time.time() - services.started, 3),
        "collections": len(db.collections),
        "storage": db.storage.as_dict(),
        "wal_bytes": db.wal_bytes, "applied_lsn": db.applied_lsn, "checkpoint_lsn": db.checkpoint_lsn,
        "replication": services.follower.stats() if services.follower is not None else db.shipping,
    })


@read_routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """200 once the data is loaded, also while storage is degraded: reads and (WAL-backed)
    writes are served then, so a load balancer must keep sending traffic."""
    db = request.app[SERVICES].db
    ready, detail = replication.follower_ready(request)
    ready = ready and db.ready
    return reply({"ready": ready, **detail}, 200 if ready else 503)


@read_routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return reply(request.app[SERVICES].openapi)


# ------------------------------------------------------------- collections
@read_routes.get("/api/v1/collections")
async def list_collections(request: web.Request) -> web.Response:
    return reply({"collections": await operations.list_collections(request.app[SERVICES].db)})


@write_routes.post("/api/v1/collections")
async def create_collection(request: web.Request) -> web.Response:
    body: CollectionIn = await decode(request, CollectionIn)
    stats, created = await operations.create_collection(request.app[SERVICES].db, body)
    return reply(stats, 201 if created else 200)


@read_routes.get("/api/v1/collections/{c}")
async def get_collection(request: web.Request) -> web.Response:
    return reply(await operations.collection_stats(request.app[SERVICES].db, request.match_info["c"]))


@write_routes.delete("/api/v1/collections/{c}")
async def drop_collection(request: web.Request) -> web.Response:
    name = request.match_info["c"]
    await operations.drop_collection(request.app[SERVICES].db, name)
    return reply({"deleted": name})


# ------------------------------------------------------------------ reads
@read_routes.post("/api/v1/collections/{c}/vectors/query")
async def query_vectors(request: web.Request) -> web.Response:
    """``GET .../vectors`` with ``filter``, ``limit``, ``offset`` and ``include_vector`` in a JSON
    body: a filter too large for a request line (a 1,000-id ``$in``) needs no query string."""
    db = request.app[SERVICES].db
    check_filter_bytes(db, await request.read())
    body: QueryIn = await decode(request, QueryIn)
    return reply(await operations.find(db, request.match_info["c"], body.filter, body.limit, body.offset,
                                       body.include_vector))


@read_routes.get("/api/v1/collections/{c}/vectors")
async def list_vectors(request: web.Request) -> web.Response:
    """Records matching ``?filter=`` (all without one) in storage order: ``?limit`` (default 100,
    at most 1000), ``?offset``, ``?include_vector`` (default false)."""
    spec = filter_param(request)
    limit = count_param(request, "limit", 100, 1, MAX_K)
    offset = count_param(request, "offset", 0, 0, None)
    return reply(await operations.find(request.app[SERVICES].db, request.match_info["c"], spec, limit, offset,
                                       flag(request, "include_vector", False)))


EXPORT_CHUNK: Final = 1_000


@read_routes.get("/api/v1/collections/{c}/export")
async def export_records(request: web.Request) -> web.StreamResponse:
    """Every record as NDJSON in id order, streamed: one ``{"id", "metadata", "timestamp",
    "vector"}`` per line (what ``.../ingest`` reads). ``?include_vector`` (default true);
    ``?after=<id>`` resumes after that id. The ids are taken when the export starts:
    records deleted meanwhile are skipped, records added meanwhile are not included."""
    db, name = request.app[SERVICES].db, request.match_info["c"]
    include_vector = flag(request, "include_vector", True)
    ids = await db.ids_after(name, request.query.get("after") or None)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           "X-S5vec-Records": str(len(ids))})
    await response.prepare(request)
    for start in range(0, len(ids), EXPORT_CHUNK):
        try:
            records, _ = await operations.get_many(db, name, ids[start:start + EXPORT_CHUNK], include_vector)
        except CollectionNotFound:  # dropped meanwhile: nothing more to send
            break
        await response.write(b"".join([ENCODER.encode(r) + b"\n" for r in records]))
    await response.write_eof()
    return response


async def get_one(request: web.Request, name: str) -> web.Response:
    return reply(await operations.get(request.app[SERVICES].db, name, request.match_info["id"],
                                      flag(request, "include_vector", True)))


@read_routes.get(f"/api/v1/collections/{{c}}/vectors/{_ID}")
async def get_vector(request: web.Request) -> web.Response:
    return await get_one(request, request.match_info["c"])


@read_routes.get(f"/api/v1/vectors/{_ID}")
async def seed_get_vector(request: web.Request) -> web.Response:
    return await get_one(request, DEFAULT)


@read_routes.post("/api/v1/search")
async def seed_search(request: web.Request) -> web.Response:
    return await search(request, DEFAULT)


# ------------------------------------------------------------------ writes
async def upsert_one(request: web.Request, name: str) -> web.Response:
    body: VectorIn = await decode(request, VectorIn)
    # concurrent single-record requests share one validation pass, WAL record and event
    return reply({"id": await operations.upsert_one(request.app[SERVICES], name, body), "status": "upserted"}, 201)


async def upsert_many(request: web.Request, name: str) -> web.Response:
    body: BatchIn = await decode(request, BatchIn)
    if len(body.vectors) > MAX_BATCH:
        raise RequestInvalid(f"a batch holds at most {MAX_BATCH} vectors, got {len(body.vectors)}", "vectors")
    return reply(await operations.upsert_batch(request.app[SERVICES], name, body.vectors))


async def delete_one(request: web.Request, name: str) -> web.Response:
    record_id = request.match_info["id"]
    await operations.delete_one(request.app[SERVICES].db, name, record_id)
    return reply({"deleted": record_id})


@write_routes.post("/api/v1/collections/{c}/vectors")
async def post_vector(request: web.Request) -> web.Response:
    return await upsert_one(request, request.match_info["c"])


@write_routes.post("/api/v1/collections/{c}/vectors/batch")
async def post_batch(request: web.Request) -> web.Response:
    return await upsert_many(request, request.match_info["c"])


@write_routes.post("/api/v1/collections/{c}/vectors/delete")
async def post_delete(request: web.Request) -> web.Response:
    db = request.app[SERVICES].db
    check_filter_bytes(db, await request.read())
    body: DeleteIn = await decode(request, DeleteIn)
    return reply({"deleted": await operations.delete(db, request.match_info["c"], body)})


@write_routes.patch(f"/api/v1/collections/{{c}}/vectors/{_ID}")
async def patch_vector(request: web.Request) -> web.Response:
    """Merge ``{"metadata": patch}`` into the record's metadata (JSON Merge Patch, RFC 7396)."""
    return await put_metadata(request, merge=True)


@write_routes.put(f"/api/v1/collections/{{c}}/vectors/{_ID}")
async def put_vector(request: web.Request) -> web.Response:
    """Replace the record's metadata with ``{"metadata": ...}``; the vector is kept."""
    return await put_metadata(request, merge=False)


async def put_metadata(request: web.Request, merge: bool) -> web.Response:
    body: MetadataIn = await decode(request, MetadataIn)
    record_id = request.match_info["id"]
    await operations.update_metadata(request.app[SERVICES].db, request.match_info["c"], record_id, body.metadata,
                                     merge)
    return reply({"id": record_id, "status": "updated"})


@write_routes.delete(f"/api/v1/collections/{{c}}/vectors/{_ID}")
async def delete_vector(request: web.Request) -> web.Response:
    return await delete_one(request, request.match_info["c"])


# ------------------------------------------------- seed-compatible routes (default)
@write_routes.post("/api/v1/vectors")
async def seed_post_vector(request: web.Request) -> web.Response:
    return await upsert_one(request, DEFAULT)


@write_routes.post("/api/v1/vectors/batch")
async def seed_post_batch(request: web.Request) -> web.Response:
    return await upsert_many(request, DEFAULT)


@write_routes.delete(f"/api/v1/vectors/{_ID}")
async def seed_delete_vector(request: web.Request) -> web.Response:
    return await delete_one(request, DEFAULT)


@write_routes.post("/api/v1/collections/{c}/tune")
async def tune_collection(request: web.Request) -> web.Response:
    """Calibrate ef/nprobe for a recall target (changes how the collection searches)."""
    body: TuneIn = await decode(request, TuneIn) if request.can_read_body else TuneIn()
    return reply(await operations.tune(request.app[SERVICES].db, request.match_info["c"], body.target_recall,
                                       body.sample))

# /api/v1/admin/{checkpoint,migrate,statistics,jobs,...} live in admin.py (jobs and backups)
