"""The application factory: one config, typed keys, lifecycle in cleanup_ctx."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from s5vec.engine import Database, EventBus
from s5vec.ops import Metrics

from . import admin, ingest, mcp_http, monitoring, sse, ws
from .auth import KeyRing, make_auth_middleware
from .backend import open_store
from .cache import QueryCache
from .config import Config
from .cors import CorsPolicy, make_cors_middleware, make_prepare_hook
from .errors import error_middleware
from .feeds import FEEDS, Feeds
from .openapi import build_openapi
from .rest import CACHE, CONFIG, DB, STARTED, VERSION, reply, routes
from .upserts import UPSERTS, SingleUpserts
from .systemd import NOTIFIER, Notifier

OPENAPI: Final = web.AppKey("openapi", dict)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    events = config.events
    bus = EventBus(events.window_events, events.window_bytes, events.queue_events, events.max_lag_events,
                   events.flush_ms / 1000.0)
    async with open_store(config) as store:  # opened before the database, closed after it
        app[NOTIFIER].status(f"loading data from {config.data_dir}")
        # admin.jobs_ctx runs checkpoints, migrations and the other jobs
        app[DB] = await Database.open(config.data_dir, config.engine, store, events=bus,
                                      storage_mode=config.storage.mode, metrics=app[monitoring.METRICS])
        app[UPSERTS] = SingleUpserts(app[DB])
        yield
        app[NOTIFIER].status("checkpointing and closing the database")
        await app[DB].close(checkpoint=True)


async def close_streams(app: web.Application) -> None:
    """Shutdown: WebSockets close with GOING_AWAY (1001), SSE streams end."""
    await app[FEEDS].shut_down()


async def openapi(request: web.Request) -> web.Response:
    return reply(request.app[OPENAPI])


def create_app(config: Config) -> web.Application:
    """Build the daemon's aiohttp application; the database opens on startup."""
    ring = KeyRing(config.auth.keys)
    metrics = Metrics()
    cors = CorsPolicy(config.cors, keyless=lambda: not ring.enabled)
    app = web.Application(middlewares=[monitoring.make_metrics_middleware(metrics), error_middleware,
                                       make_cors_middleware(cors),  # preflights carry no API key
                                       make_auth_middleware(ring, "read" if config.metrics_need_auth else None)],
                          client_max_size=config.http.max_body_bytes)
    app[CONFIG] = config
    app[monitoring.METRICS] = metrics
    app[NOTIFIER] = Notifier(None)  # `s5vec serve` puts the one from $NOTIFY_SOCKET here
    app[ws.KEYS] = ring
    app[FEEDS] = Feeds()
    app[STARTED] = time.time()
    app[OPENAPI] = build_openapi(VERSION)
    app[CACHE] = QueryCache(config.http.query_cache_entries)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(admin.jobs_ctx)
    app.cleanup_ctx.append(monitoring.monitor_ctx)
    app.cleanup_ctx.append(mcp_http.mcp_ctx)  # MCP at /mcp: stops before the database closes
    app.on_shutdown.append(close_streams)
    app.on_response_prepare.append(make_prepare_hook(cors))
    app.add_routes(routes)
    app.add_routes(admin.routes)
    app.add_routes(ingest.routes)
    app.add_routes(sse.routes)
    app.add_routes(ws.routes)
    app.add_routes(monitoring.routes)
    app.add_routes(mcp_http.routes)
    app.router.add_get("/openapi.json", openapi)
    return app
