"""The MCP server's streamable HTTP transport, mounted on the daemon's own port at ``/mcp``.

The SDK's transport is an ASGI application; :func:`asgi.call_asgi` serves it from an
aiohttp handler, so the daemon's middlewares run first: ``/mcp`` needs an API key with the
read scope whenever keys are configured (401/403 before the MCP app sees the request).
The transport is stateless with JSON responses: every tool is a short read, so no session
state or long-lived stream has to survive between requests (nor a restart).  The SDK's
Host/Origin (DNS rebinding) check is on when the daemon has no API keys, the case where
nothing else stops a web page from reaching a loopback daemon through a rebound name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Final

from typing import TYPE_CHECKING

from aiohttp import web
from s5vec.engine import Database

from .asgi import call_asgi
from .auth import MCP_PATH
from .services import SERVICES

if TYPE_CHECKING:  # the SDK (seconds of imports) loads on the first MCP request, not at start-up
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
_LOOPBACK_HOSTS: Final = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
_LOOPBACK_ORIGINS: Final = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def transport_security(has_keys: bool, cors_origins: tuple[str, ...] = ()) -> TransportSecuritySettings:
    """Host/Origin checks only for a keyless (hence loopback-only) daemon; origins listed
    in ``[cors] allow_origins`` are admitted like loopback ones."""
    from mcp.server.transport_security import TransportSecuritySettings
    if has_keys:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=list(_LOOPBACK_HOSTS),
                                     allowed_origins=[*_LOOPBACK_ORIGINS, *cors_origins])


class McpEndpoint:
    """Imports the SDK, builds the MCP server and starts its session manager on the first
    request (most daemons never serve MCP: no start-up cost for them), in a task of its own (its anyio task
    group must start and stop in one task), until :meth:`stop`."""

    def __init__(self, db: Database, has_keys: bool, cors_origins: tuple[str, ...] = ()) -> None:
        self._db, self._has_keys, self._cors_origins = db, has_keys, cors_origins
        self._manager: StreamableHTTPSessionManager | None = None
        self._starting = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self, manager: StreamableHTTPSessionManager, started: asyncio.Future[None]) -> None:
        async with manager.run():
            started.set_result(None)
            await self._stop.wait()

    async def _start(self) -> StreamableHTTPSessionManager:
        """The running session manager; raises what starting it raises."""
        async with self._starting:
            if self._manager is not None:
                return self._manager
            if self._stop.is_set():
                raise web.HTTPServiceUnavailable(reason="shutting down")
            from .mcp_server import DatabaseBackend, build_server
            server = build_server(DatabaseBackend(self._db))
            server.streamable_http_app(streamable_http_path=MCP_PATH, stateless_http=True, json_response=True,
                                       transport_security=transport_security(self._has_keys, self._cors_origins))
            manager = server.session_manager
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(manager, started), name="mcp-session-manager")
            await asyncio.wait((started, self._task), return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                started.cancel()
                task, self._task = self._task, None
                await task  # raises the start-up error
            self._manager = manager
            return manager

    async def stop(self) -> None:
        """Stop the session manager, if it started (in-flight MCP requests have finished by then)."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def handle(self, request: web.Request) -> web.StreamResponse:
        manager = self._manager or await self._start()
        return await call_asgi(manager.handle_request, request)


async def mcp_ctx(app: web.Application) -> AsyncIterator[None]:
    """Lifecycle: after the database opens; stops before it closes, once requests are drained."""
    if not log.isEnabledFor(logging.DEBUG):  # the SDK logs every stateless request at INFO
        logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    services = app[SERVICES]
    endpoint = McpEndpoint(services.db, bool(services.config.auth.keys), services.config.cors.allow_origins)
    services.serving_mcp(endpoint)
    try:
        yield
    finally:
        await endpoint.stop()


@routes.route("*", MCP_PATH)
async def mcp(request: web.Request) -> web.StreamResponse:
    """The MCP streamable HTTP endpoint: JSON-RPC in a POST.  Stateless, the server has nothing
    to push and no session to end, so GET (a standalone event stream) and DELETE get 405, as
    the transport's specification allows, rather than a stream that would idle until shutdown."""
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    return await request.app[SERVICES].mcp.handle(request)
