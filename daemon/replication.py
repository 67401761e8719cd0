"""Replication over HTTP: the role route, read-your-writes (``min_lsn``), LSNs on writes,
and a follower's refusal of writes (see docs/replication.md).

A follower mounts only the read table (plus these routes): a request with a write method
that matches no route there is answered 403 ``read_only_replica``, naming the writer's URL
(``replication.writer_url``) in the message and in ``S5vec-Writer``. Any request may carry
``?min_lsn=N``: it waits up to ``replication.min_lsn_timeout_s`` for this node to have
applied LSN N, else 503 ``replica_lagging`` with ``Retry-After``. Every write-method answer
below 300 carries ``S5vec-LSN``: the LSN this node had applied when it answered, at least
the write's own (a client passes it as ``min_lsn`` to read its write on any node).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from s5vec.engine import ReadOnlyDatabase
from s5vec.engine.config import DURABILITIES
from s5vec.engine.shipping import DURABILITY
from s5vec.storage import StorageError

from .errors import ApiError, Handler, RequestInvalid, error_response
from .leadership import RESTART, as_writer
from .params import flag, reply
from .services import SERVICES

LSN_HEADER: Final = "S5vec-LSN"
WRITER_HEADER: Final = "S5vec-Writer"
_WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

routes = web.RouteTableDef()


def make_replication_middleware() -> Middleware:
    @web.middleware
    async def replication_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        services = request.app[SERVICES]
        if services.follower is not None and request.method in _WRITE_METHODS \
                and request.match_info.http_exception is not None and request.path.startswith("/api/"):
            return refuse_write(request)
        durability = request.query.get("durability") if request.method in _WRITE_METHODS else None
        if durability is not None:
            if durability not in DURABILITIES:
                raise RequestInvalid(f"durability: must be one of {', '.join(DURABILITIES)}, got {durability[:40]!r}",
                                     "durability")
            if durability == "replicated" and services.db.shipping is None:
                raise RequestInvalid("durability: replicated needs WAL shipping (storage.mode portal or bridge, "
                                     "or replication.ship_wal = true)", "durability")
        token = DURABILITY.set(durability)  # this request's writes are acknowledged accordingly
        try:
            return await _serve(request, handler, services)
        finally:
            DURABILITY.reset(token)  # a keep-alive connection may run its next request in this task

    async def _serve(request: web.Request, handler: Handler, services: Any) -> web.StreamResponse:
        config = services.config.replication
        raw = request.query.get("min_lsn")
        if raw is not None:
            try:
                min_lsn = int(raw)
            except ValueError:
                min_lsn = -1
            if min_lsn < 0:
                raise RequestInvalid(f"min_lsn: expected a non-negative integer, got {raw[:40]!r}", "min_lsn")
            db = services.db
            if not await db.wait_for_lsn(min_lsn, config.min_lsn_timeout_s):
                return error_response(
                    503, "replica_lagging",
                    f"this node has applied LSN {db.applied_lsn}, not yet {min_lsn} (waited "
                    f"{config.min_lsn_timeout_s:g} s); retry, or read from the writer",
                    headers={"Retry-After": "1"})
        try:
            response = await handler(request)
        except ReadOnlyDatabase:  # a follower with every table mounted (leader election)
            if services.follower is None:
                raise
            return refuse_write(request)
        if request.method in _WRITE_METHODS and response.status < 300 and services.is_open \
                and not response.prepared:
            response.headers[LSN_HEADER] = str(services.db.applied_lsn)
        return response

    return replication_middleware


def writer_url(request: web.Request) -> str | None:
    services = request.app[SERVICES]
    follower = services.follower
    return (follower.writer_url if follower is not None else None) or services.config.replication.writer_url


def refuse_write(request: web.Request) -> web.Response:
    url = writer_url(request)
    where = url or "the writer (replication.writer_url is not set on this follower)"
    return error_response(403, "read_only_replica", f"this node is a read-only follower: send writes to {where}",
                          headers={WRITER_HEADER: url} if url else None)


def role_document(request: web.Request) -> dict[str, Any]:
    services = request.app[SERVICES]
    config = services.config.replication
    db = services.db
    role = "follower" if services.follower is not None else "writer"
    doc: dict[str, Any] = {"role": role, "applied_lsn": db.applied_lsn, "writer_url": writer_url(request)}
    if services.follower is not None:
        doc.update(services.follower.stats())
    elif db.not_writer() is not None:
        doc["role"] = "fenced"  # still running as the writer, but may not acknowledge: not a write target
        doc["fenced"] = db.not_writer()
    elif db.shipping is not None:
        doc["shipping"] = db.shipping
        doc["durability"] = config.durability
    return doc


@routes.get("/api/v1/replication/role")
async def replication_role(request: web.Request) -> web.Response:
    """This node's role (``writer`` or ``follower``), applied LSN and replication state.
    A load balancer sends writes to the node whose body says ``"role":"writer"``."""
    return reply(role_document(request))


@routes.post("/api/v1/admin/promote")
async def promote(request: web.Request) -> web.Response:
    """Make this follower the writer: with etcd it campaigns for the writer lease (409
    ``writer_exists`` while another node holds it); without etcd only with ``force=true``
    (safe only while the old writer is known dead). 202, then the daemon runs again as the
    writer (a few seconds: it loads the root and every shipped chunk)."""
    services = request.app[SERVICES]
    follower = services.follower
    if follower is None:
        raise ApiError(409, "already_writer", "this node is the writer already")
    lease = services.lease
    if lease is not None:
        try:
            await follower.poll()  # catch up with everything the old writer shipped
        except StorageError:
            pass
        epoch = await lease.campaign()
        if epoch is None:
            holder = await lease.holder()
            raise ApiError(409, "writer_exists", f"{holder[0] if holder else 'another node'} holds the writer lease; "
                           "stop it, or wait for its lease to expire")
        env = as_writer(epoch, lease)
    else:
        if not flag(request, "force", False):
            raise ApiError(409, "force_required",
                           "no leader election (replication.etcd_endpoints) is configured: promotion is safe only "
                           "while the old writer is known dead; pass force=true once it is")
        try:
            await follower.poll()
        except StorageError:
            pass
        epoch = follower.head_epoch + 1
        env = as_writer(epoch, None)
    request.app[RESTART].request(f"promoted to writer (epoch {epoch})", env)
    return reply({"promoting": True, "epoch": epoch, "applied_lsn": follower.db.applied_lsn}, 202)


def follower_ready(request: web.Request) -> tuple[bool, dict[str, Any]]:
    """Whether a follower is ready (caught up within ``max_lag_s`` and not stale)."""
    follower = request.app[SERVICES].follower
    if follower is None:
        return True, {}
    limit = request.app[SERVICES].config.replication.max_lag_s
    ok = follower.db.ready and follower.stale is None and follower.lag_seconds <= limit
    return ok, {"role": "follower", "lag_seconds": round(follower.lag_seconds, 3), "lag_lsn": follower.lag_lsn,
                "max_lag_s": limit, "stale": follower.stale}
