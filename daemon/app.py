"""The application factory: one config, one services object under one app key, lifecycle in
cleanup_ctx, and the routes in three tables (read, write, admin).

``create_app(config)`` mounts all three; ``create_app(config, tables=("read",))`` is a
read-only API (what a follower will serve): searches, reads, feeds and health answer, and a
write route does not exist (404, or 405 where a read shares its path).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final

from aiohttp import web

from s5vec.engine import Database, EventBus, Executors
from s5vec.engine.following import Follower
from s5vec.storage import BlobStore, StorageError
from s5vec.ops import Metrics

from . import admin, bulk, console, ingest, mcp_http, monitoring, replication, rest, sse, ws
from .auth import KeyRing, make_auth_middleware
from .backend import open_store
from .leadership import RESTART, ElectionUnavailable, EtcdLease, Restart, as_follower, as_writer
from .cache import QueryCache
from .config import Config
from .cors import CorsPolicy, make_cors_middleware, make_prepare_hook
from .errors import error_middleware
from .feeds import Feeds
from .openapi import build_openapi
from .services import SERVICES, VERSION, Services
from .systemd import Notifier

log = logging.getLogger(__name__)

# Which table each route is in. The read table is mounted first: aiohttp tries the routes of
# one prefix in the order they were added, and the search route must be tried first.
ROUTE_TABLES: Final[dict[str, tuple[web.RouteTableDef, ...]]] = {
    "read": (rest.read_routes, sse.routes, ws.routes, monitoring.read_routes, mcp_http.routes, replication.routes,
             console.routes),
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
        async with open_store(config) as store, electing(app) as lease:  # opened before the database
            services.notifier.status(f"loading data from {config.data_dir}")
            role, epoch = config.replication.role, config.replication.epoch
            if lease is not None and role == "writer":
                role, epoch = await campaign(lease, config)
            if role == "follower":
                async with following(app, store, bus, executors, lease):
                    yield
                return
            # admin.jobs_ctx runs checkpoints, migrations and the other jobs
            replication = dataclasses.replace(config.replication, epoch=epoch)
            db = await Database.open(config.data_dir, config.engine, store, events=bus,
                                     storage_mode=config.storage.mode, metrics=services.metrics,
                                     executors=executors, replication=replication if config.ships_wal else None,
                                     fence=lease.fence if lease is not None else None)
            services.opened(db)
            keeper = asyncio.create_task(keep_lease(app, lease), name="s5vec-lease") if lease is not None else None
            try:
                yield
            finally:
                services.notifier.status("checkpointing and closing the database")
                await db.close(checkpoint=True)
                if keeper is not None:
                    keeper.cancel()
                    await asyncio.gather(keeper, return_exceptions=True)
                    if app[RESTART].env is None:
                        await lease.resign()  # a clean stop: a follower need not wait for the TTL
    finally:
        await asyncio.to_thread(executors.shutdown)


@asynccontextmanager
async def electing(app: web.Application) -> AsyncIterator[EtcdLease | None]:
    """The etcd lease of this node when ``replication.etcd_endpoints`` is set."""
    config = app[SERVICES].config
    rc = config.replication
    if not rc.etcd_endpoints:
        yield None
        return
    url = rc.advertise_url or f"http://{config.http.host}:{config.http.port}"
    lease = EtcdLease(rc.etcd_endpoints, rc.etcd_key, url, rc.lease_ttl_s)
    app[SERVICES].elected(lease)
    try:
        yield lease
    finally:
        await lease.close()


async def campaign(lease: EtcdLease, config: Config) -> tuple[str, int]:
    """A node configured as the writer: resume the lease it was promoted with, or campaign.
    Another holder makes it a follower; an unreachable etcd stops start-up."""
    rc = config.replication
    if rc.lease_id:
        if await lease.resume(rc.lease_id, rc.epoch):
            return "writer", rc.epoch
        log.warning("the lease this node was promoted with is gone; starting as a follower")
        return "follower", 0
    epoch = await lease.campaign()
    if epoch is None:
        holder = await lease.holder()
        log.warning("%s holds the writer lease; starting as a follower", holder[0] if holder else "another node")
        return "follower", 0
    return "writer", epoch


async def keep_lease(app: web.Application, lease: EtcdLease) -> None:
    """Keep the writer's lease; once it is lost, run again as a follower."""
    await lease.run()
    app[RESTART].request(f"this node lost the writer lease ({lease.lost})", as_follower())


@asynccontextmanager
async def following(app: web.Application, store: BlobStore | None, bus: EventBus,
                    executors: Executors, lease: EtcdLease | None) -> AsyncIterator[None]:
    """A follower: the read-only database loaded from the writer's root and shipped WAL,
    and the tasks that tail it and (with ``auto_failover``) watch the writer's lease, owned
    here and stopped before the database closes."""
    services = app[SERVICES]
    config = services.config
    assert store is not None  # validate() allows followers only with remote storage
    follower = await Follower.open(config.data_dir, config.engine, store, config.replication, events=bus,
                                   storage_mode=config.storage.mode, metrics=services.metrics, executors=executors)
    services.opened(follower.db)
    services.following(follower)
    tasks = [asyncio.create_task(follower.run(), name="s5vec-follower")]
    if lease is not None:
        tasks.append(asyncio.create_task(watch_writer(app, follower, lease), name="s5vec-watch-writer"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await follower.close()


async def watch_writer(app: web.Application, follower: Follower, lease: EtcdLease) -> None:
    """Follower with etcd: learn who writes (for 403 answers) and, with ``auto_failover``,
    campaign once the writer's lease is gone while this node is caught up."""
    rc = app[SERVICES].config.replication
    interval = min(1.0, rc.lease_ttl_s / 4)
    first = True
    while True:
        if not first:
            await asyncio.sleep(interval)
        first = False
        try:
            holder = await lease.holder()
        except ElectionUnavailable:
            continue
        if holder is not None:
            follower.writer_url = holder[0]
            continue
        if not rc.auto_failover or follower.stale is not None or follower.lag_seconds > rc.max_lag_s:
            continue
        try:
            await follower.poll()  # everything the dead writer shipped, before taking over
            epoch = await lease.campaign()
        except (StorageError, ElectionUnavailable) as exc:
            log.warning("not taking over yet: %s", exc)
            continue
        if epoch is not None:
            app[RESTART].request(f"the writer's lease expired: this follower takes over (epoch {epoch})",
                                 as_writer(epoch, lease))
            return


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
                                       make_auth_middleware(ring, "read" if config.metrics_need_auth else None),
                                       replication.make_replication_middleware()],
                          client_max_size=config.http.max_body_bytes)
    app[SERVICES] = Services(config=config, keys=ring, metrics=metrics, feeds=Feeds(),
                             cache=QueryCache(config.http.query_cache_entries),
                             notifier=notifier or Notifier(None), openapi=build_openapi(VERSION))
    app[RESTART] = Restart()
    app.cleanup_ctx.append(database_ctx)
    # A follower mounts the read table only; with etcd the role is decided at start-up (and
    # changes by running again), so every table is mounted and a follower's engine refuses writes.
    follower = config.replication.role == "follower" and not config.replication.etcd_endpoints
    if not follower:  # jobs_ctx starts no jobs on a follower: the writer checkpoints and migrates
        app.cleanup_ctx.append(admin.jobs_ctx)
    app.cleanup_ctx.append(monitoring.monitor_ctx)
    app.cleanup_ctx.append(mcp_http.mcp_ctx)  # MCP at /mcp: stops before the database closes
    app.on_shutdown.append(close_streams)
    app.on_response_prepare.append(make_prepare_hook(cors))
    wanted = set(tables) & {"read"} if follower else set(tables)  # a follower mounts only read routes
    unknown = wanted - set(ROUTE_TABLES)
    if unknown:
        raise ValueError(f"unknown route tables {sorted(unknown)}; known: {', '.join(ROUTE_TABLES)}")
    for name, table_defs in ROUTE_TABLES.items():  # in this order: read first
        if name in wanted:
            for table in table_defs:
                app.add_routes(table)
    return app
