"""The application factory: one config, one services object under one app key, lifecycle in
cleanup_ctx, and the routes in three tables (read, write, admin).

``create_app(config)`` mounts all three; ``create_app(config, tables=("read",))`` is a
read-only API (what a follower will serve): searches, reads, feeds and health answer, and a
write route does not exist (404, or 405 where a read shares its path).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Final

from aiohttp import web

from s5vec.engine import Database, EventBus, Executors
from s5vec.ops import Metrics

from . import admin, bulk, console, ingest, mcp_http, monitoring, rest, sse, ws
from .auth import KeyRing, make_auth_middleware
from .backend import open_store
from .cache import QueryCache
from .config import Config
from .cors import CorsPolicy, make_cors_middleware, make_prepare_hook
from .errors import error_middleware
from .feeds import Feeds
from .openapi import build_openapi
from .services import SERVICES, VERSION, Services
from .systemd import Notifier

# Which table each route is in. The read table is mounted first: aiohttp tries the routes of
# one prefix in the order they were added, and the search route must be tried first.
ROUTE_TABLES: Final[dict[str, tuple[web.RouteTableDef, ...]]] = {
    "read": (rest.read_routes, sse.routes, ws.routes, monitoring.read_routes, mcp_http.routes, console.routes),
    "write": (rest.write_routes, ingest.routes, bulk.routes),
    "admin": (admin.routes, monitoring.admin_routes),
}


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    config = services.config
    events = config.events
    bus = EventBus(events.window_events, events.window_bytes, events.queue_events, events.max_lag_events,
                   events.flush_ms / 1000.0)
    # the daemon owns the engine's thread pools: built here, shut down after the database closed
    executors = Executors.create(config.engine.search_threads, config.engine.background_nice)
    try:
        async with open_store(config) as store:  # opened before the database, closed after it
            services.notifier.status(f"loading data from {config.data_dir}")
            # admin.jobs_ctx runs checkpoints, migrations and the other jobs
            db = await Database.open(config.data_dir, config.engine, store, events=bus,
                                     storage_mode=config.storage.mode, metrics=services.metrics,
                                     executors=executors)
            services.opened(db)
            yield
            services.notifier.status("checkpointing and closing the database")
            await db.close(checkpoint=True)
    finally:
        await asyncio.to_thread(executors.shutdown)


async def close_streams(app: web.Application) -> None:
    """Shutdown: WebSockets close with GOING_AWAY (1001), SSE streams end."""
    await app[SERVICES].feeds.shut_down()


def create_app(config: Config, *, tables: Iterable[str] = ("read", "write", "admin"),
               notifier: Notifier | None = None) -> web.Application:
    """Build the daemon's aiohttp application with the route ``tables`` named (see
    ROUTE_TABLES); the database opens on startup. ``notifier`` tells systemd (none: silent)."""
    ring = KeyRing(config.auth.keys)
    metrics = Metrics()
    cors = CorsPolicy(config.cors, keyless=lambda: not ring.enabled)
    app = web.Application(middlewares=[monitoring.make_metrics_middleware(metrics), error_middleware,
                                       make_cors_middleware(cors),  # preflights carry no API key
                                       make_auth_middleware(ring, "read" if config.metrics_need_auth else None)],
                          client_max_size=config.http.max_body_bytes)
    app[SERVICES] = Services(config=config, keys=ring, metrics=metrics, feeds=Feeds(),
                             cache=QueryCache(config.http.query_cache_entries),
                             notifier=notifier or Notifier(None), openapi=build_openapi(VERSION))
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(admin.jobs_ctx)
    app.cleanup_ctx.append(monitoring.monitor_ctx)
    app.cleanup_ctx.append(mcp_http.mcp_ctx)  # MCP at /mcp: stops before the database closes
    app.on_shutdown.append(close_streams)
    app.on_response_prepare.append(make_prepare_hook(cors))
    wanted = set(tables)
    unknown = wanted - set(ROUTE_TABLES)
    if unknown:
        raise ValueError(f"unknown route tables {sorted(unknown)}; known: {', '.join(ROUTE_TABLES)}")
    for name, table_defs in ROUTE_TABLES.items():  # in this order: read first
        if name in wanted:
            for table in table_defs:
                app.add_routes(table)
    return app
