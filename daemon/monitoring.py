"""Prometheus ``/metrics``, the request-latency middleware and the admin health report.

The middleware is the outermost one, so it sees the status the client gets (after
error translation and authentication); the route label is the matched route's
canonical path (``/api/v1/collections/{c}/search``), never the raw URL, so the label
set stays bounded. Streaming responses (WebSocket, SSE) are counted by the
``s5vec_feed_connections`` gauge instead of the latency histogram. A request whose client
went away before the answer (an aborted WebSocket handshake, say) is counted with status
499, nginx's "client closed request", which Prometheus users know from ingress-nginx: it
is neither a server error (no 5xx alert fires) nor dropped from the request count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from s5vec.ops import HealthMonitor, Metrics

from . import sse, ws
from .errors import CLIENT_CLOSED_REQUEST, Handler, client_gone
from .feeds import Feeds
from .params import reply
from .services import SERVICES

log = logging.getLogger(__name__)
UNMATCHED: Final = "unmatched"
read_routes = web.RouteTableDef()   # /metrics
admin_routes = web.RouteTableDef()  # the health report


def route_of(request: web.Request) -> str:
    """The canonical path of the route that matched ``request`` (``unmatched`` if none)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def make_metrics_middleware(metrics: Metrics) -> Middleware:
    histogram, in_flight = metrics.http_requests, metrics.http_in_flight
    children: dict[tuple[str, str, int], Any] = {}  # labelled histograms: labels() takes a lock per call

    def observe(request: web.Request, status: int, seconds: float) -> None:
        key = (route_of(request), request.method, status)
        child = children.get(key)
        if child is None:
            child = children[key] = histogram.labels(key[0], key[1], str(status))
        child.observe(seconds)

    @web.middleware
    async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        in_flight.inc()
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # only non-error statuses get past error_middleware
            observe(request, exc.status, time.perf_counter() - started)
            raise
        except asyncio.CancelledError:  # the handler was cancelled because its client left
            if client_gone(request, asyncio.CancelledError()):
                observe(request, CLIENT_CLOSED_REQUEST, time.perf_counter() - started)
            raise
        finally:
            in_flight.dec()
        if isinstance(response, web.Response):
            observe(request, response.status, time.perf_counter() - started)
        return response

    return metrics_middleware


def feed_connections(feeds: Feeds) -> dict[str, int]:
    """Open live feeds by transport (``websocket``, ``sse``)."""
    counts = {"websocket": 0, "sse": 0}
    for stream in list(feeds.open):
        if isinstance(stream, ws.Connection):
            counts["websocket"] += 1
        elif isinstance(stream, sse.EventStream):
            counts["sse"] += 1
    return counts


async def monitor_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the database opened: export its state, check health every
    ``health.check_interval_s`` (logging each alert once as it starts and ends)."""
    services = app[SERVICES]
    db, feeds, config = services.db, services.feeds, services.config
    monitor = HealthMonitor(db, config.health)
    services.monitoring(monitor)
    services.metrics.attach(db, feeds=lambda: feed_connections(feeds),
                        alerts=lambda: [(a.alert, a.severity) for a in monitor.alerts()])
    task = asyncio.create_task(_check_health(monitor, config.health.check_interval_s), name="s5vec-health")
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def _check_health(monitor: HealthMonitor, interval: float) -> None:
    while True:
        try:
            monitor.check()
        except Exception:  # a failing check must not end the checks
            log.exception("health check failed")
        await asyncio.sleep(interval)


@read_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition format (scope: see ``[metrics] require_auth``)."""
    body, content_type = request.app[SERVICES].metrics.render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


@admin_routes.get("/api/v1/admin/health")
async def admin_health(request: web.Request) -> web.Response:
    """The health report: ``status`` (ok, warning, critical), each check, active alerts."""
    return reply(request.app[SERVICES].monitor.report())
