"""Serve an ASGI 3 application from an aiohttp handler: one request in, a streamed response out.

The MCP SDK's streamable HTTP transport is an ASGI application; this bridge mounts it on
the daemon's own port, behind the daemon's middlewares (metrics, errors, API keys).  Only
the ``http`` scope is bridged (no WebSocket, no lifespan: the caller runs the app's
lifecycle itself).  Written here rather than taken from ``aiohttp-asgi`` because that one,
after the request body, answers ``receive()`` with empty body messages in a loop instead of
blocking until the client goes away, which a streaming response (server-sent events) that
listens for ``http.disconnect`` turns into a busy loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict

from .errors import http_error

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DISCONNECT_POLL_S: Final = 0.5  # aiohttp has no "client went away" event to await: look this often


class _Exchange:
    """The ASGI ``receive``/``send`` pair of one aiohttp request."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None
        self.ended = False
        self.finished = asyncio.Event()  # the response is complete or the app returned
        self._body_done = False
        self._error: tuple[int, bytearray] | None = None  # a non-JSON error the app is sending

    def scope(self, extra: dict[str, Any] | None) -> Scope:
        request = self.request
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        sock = transport.get_extra_info("sockname") if transport is not None else None
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": f"{request.version.major}.{request.version.minor}",
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.rel_url.raw_path.encode("latin-1"),
            "query_string": request.rel_url.raw_query_string.encode("latin-1"),
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in request.raw_headers],
            "client": (peer[0], peer[1]) if isinstance(peer, tuple) else None,
            "server": (sock[0], sock[1]) if isinstance(sock, tuple) else None,
            "state": {},
        }
        scope.update(extra or {})
        return scope

    def _client_gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    async def receive(self) -> Message:
        if not self._body_done:
            try:
                chunk = await self.request.content.readany()
            except OSError:  # the connection was lost mid-body
                self._body_done = True
                return {"type": "http.disconnect"}
            more = bool(chunk) and not self.request.content.at_eof()
            self._body_done = not more
            return {"type": "http.request", "body": chunk, "more_body": more}
        # After the body, receive() blocks until the exchange is over (ASGI's contract).
        while not self.finished.is_set() and not self._client_gone():
            try:
                async with asyncio.timeout(DISCONNECT_POLL_S):
                    await self.finished.wait()
            except TimeoutError:
                pass
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.response is not None or self._error is not None:
                raise RuntimeError("ASGI app sent http.response.start twice")
            headers: CIMultiDict[str] = CIMultiDict()
            for name, value in message.get("headers", ()):
                headers.add(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            status = int(message["status"])
            if status >= 400 and not headers.get("Content-Type", "").startswith("application/json"):
                self._error = (status, bytearray())  # e.g. the SDK's text/plain 413: sent in the error shape
                return
            self.response = web.StreamResponse(status=status, headers=headers)
        elif kind == "http.response.body" and self._error is not None:
            if self.ended:
                raise RuntimeError("ASGI app sent a body outside a response")
            status, text = self._error
            text.extend(message.get("body", b""))
            if not message.get("more_body", False):
                self.response = http_error(status, text.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}")
                await self.response.prepare(self.request)
                await self.response.write_eof()
                self.ended = True
                self.finished.set()
        elif kind == "http.response.body":
            if self.response is None or self.ended:
                raise RuntimeError("ASGI app sent a body outside a response")
            if not self.response.prepared:
                await self.response.prepare(self.request)
            body = bytes(message.get("body", b""))
            if body:
                await self.response.write(body)
            if not message.get("more_body", False):
                await self.response.write_eof()
                self.ended = True
                self.finished.set()
        else:
            raise RuntimeError(f"unsupported ASGI message {kind!r}")


async def call_asgi(app: ASGIApp, request: web.Request, extra_scope: dict[str, Any] | None = None
                    ) -> web.StreamResponse:
    """Run ``app`` for ``request`` and return its (already sent) response.

    ``extra_scope`` keys join the ASGI scope.  An error before the app starts its response
    propagates (the daemon's error middleware answers it); after, it is logged and the
    connection is closed, since the status line has gone out."""
    exchange = _Exchange(request)
    try:
        await app(exchange.scope(extra_scope), exchange.receive, exchange.send)
    except Exception:
        if exchange.response is None or not exchange.response.prepared:
            raise
        log.exception("ASGI app failed mid-response to %s %s", request.method, request.path)
        if request.transport is not None:
            request.transport.close()  # no final chunk: the client sees a cut-off body, not a short one
        return exchange.response
    finally:
        exchange.finished.set()
    response = exchange.response
    if response is None:
        raise RuntimeError(f"ASGI app sent no response to {request.method} {request.path}")
    if not exchange.ended:
        if not response.prepared:
            await response.prepare(request)
        await response.write_eof()
    return response
