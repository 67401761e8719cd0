"""The application factory: one config, typed keys, lifecycle in cleanup_ctx."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from s5vec.ops import Database

from .auth import KeyRing, make_auth_middleware
from .config import Config
from .errors import error_middleware
from .openapi import build_openapi
from .cache import QueryCache
from .rest import CACHE, CONFIG, DB, STARTED, VERSION, reply, routes

OPENAPI: Final = web.AppKey("openapi", dict)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[DB] = await Database.open(config.data_dir, config.engine)
    yield
    await app[DB].close(checkpoint=True)


async def openapi(request: web.Request) -> web.Response:
    return reply(request.app[OPENAPI])


def create_app(config: Config) -> web.Application:
    """Build the daemon's aiohttp application; the database opens on startup."""
    app = web.Application(middlewares=[error_middleware, make_auth_middleware(KeyRing(config.auth.keys))],
                          client_max_size=config.http.max_body_bytes)
    app[CONFIG] = config
    app[STARTED] = time.time()
    app[OPENAPI] = build_openapi(VERSION)
    app[CACHE] = QueryCache(config.http.query_cache_entries)
    app.cleanup_ctx.append(database_ctx)
    app.add_routes(routes)
    app.router.add_get("/openapi.json", openapi)
    return app
