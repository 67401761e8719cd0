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

from .errors import Handler, RequestInvalid, error_response
from .params import reply
from .services import SERVICES

LSN_HEADER: Final = "S5vec-LSN"
WRITER_HEADER: Final = "S5vec-Writer"
_WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

routes = web.RouteTableDef()


def make_replication_middleware() -> Middleware:
    @web.middleware
    async def replication_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        services = request.app[SERVICES]
        config = services.config.replication
        follower = config.role == "follower"
        if follower and request.method in _WRITE_METHODS and request.match_info.http_exception is not None \
                and request.path.startswith("/api/"):
            where = config.writer_url or "the writer (replication.writer_url is not set on this follower)"
            headers = {WRITER_HEADER: config.writer_url} if config.writer_url else None
            return error_response(403, "read_only_replica",
                                  f"this node is a read-only follower: send writes to {where}", headers=headers)
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
        response = await handler(request)
        if request.method in _WRITE_METHODS and response.status < 300 and services.is_open \
                and not response.prepared:
            response.headers[LSN_HEADER] = str(services.db.applied_lsn)
        return response

    return replication_middleware


def role_document(request: web.Request) -> dict[str, Any]:
    services = request.app[SERVICES]
    config = services.config.replication
    db = services.db
    doc: dict[str, Any] = {"role": config.role, "applied_lsn": db.applied_lsn, "writer_url": config.writer_url}
    if services.follower is not None:
        doc.update(services.follower.stats())
    elif db.shipping is not None:
        doc["shipping"] = db.shipping
        doc["durability"] = config.durability
    return doc


@routes.get("/api/v1/replication/role")
async def replication_role(request: web.Request) -> web.Response:
    """This node's role (``writer`` or ``follower``), applied LSN and replication state.
    A load balancer sends writes to the node whose body says ``"role":"writer"``."""
    return reply(role_document(request))


def follower_ready(request: web.Request) -> tuple[bool, dict[str, Any]]:
    """Whether a follower is ready (caught up within ``max_lag_s`` and not stale)."""
    follower = request.app[SERVICES].follower
    if follower is None:
        return True, {}
    limit = request.app[SERVICES].config.replication.max_lag_s
    ok = follower.db.ready and follower.stale is None and follower.lag_seconds <= limit
    return ok, {"role": "follower", "lag_seconds": round(follower.lag_seconds, 3), "lag_lsn": follower.lag_lsn,
                "max_lag_s": limit, "stale": follower.stale}
