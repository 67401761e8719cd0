"""Requests from web pages: CORS (off unless ``[cors] allow_origins`` is set) and the
browser guard of a daemon without API keys.

CORS: a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed
origin is answered here, before authentication (browsers send preflights without
credentials), with the allowed methods and headers; every other response to an allowed
origin — REST, SSE and ``/mcp``, errors included, so a page can read a 401 — carries
``Access-Control-Allow-Origin`` with that origin and ``Vary: Origin``. A disallowed origin
gets no CORS header (its preflight a 403), so the browser withholds the response.

Browser guard: a keyless daemon listens on loopback only, but a web page in the user's
browser can still reach it — a "simple" cross-origin POST needs no preflight and the
WebSocket API has no CORS at all, and a DNS-rebound name makes a page same-origin with the
daemon. So without API keys a request whose ``Host`` is not a loopback name is refused with
421, and one whose ``Origin`` is neither a loopback origin nor an allowed CORS origin with
403 (the same rules the MCP SDK applies to ``/mcp``). Clients other than browsers send no
``Origin`` and are not affected. With API keys the key is the protection: a page has none.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from .config import CorsConfig
from .errors import Handler, error_response

ALLOW_METHODS: Final = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS: Final = "Authorization, Content-Type, Accept, Last-Event-ID, Mcp-Protocol-Version, Mcp-Session-Id"
EXPOSE_HEADERS: Final = "Mcp-Session-Id, Retry-After"
_LOOPBACK_NAMES: Final = ("localhost",)


@functools.lru_cache(maxsize=64)  # asked on every keyless request; parsing an address costs ~3 us
def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """``Host`` header value without its port (IPv6 literals keep their brackets off)."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class CorsPolicy:
    """Which origins may read responses, and whether the keyless browser guard is on."""

    def __init__(self, config: CorsConfig, keyless: Callable[[], bool]) -> None:
        """``keyless``: whether the daemon has no API keys right now (SIGHUP may change it)."""
        self.origins = frozenset(config.allow_origins)
        self.any = "*" in self.origins
        self.credentials = config.allow_credentials
        self.max_age = str(config.max_age_s)
        self.keyless = keyless

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allows(self, origin: str) -> bool:
        return self.any or origin in self.origins

    def browser_refusal(self, request: web.Request) -> web.Response | None:
        """For a keyless daemon: the 421/403 answer to a rebound host name or a foreign web
        page, or None to serve the request."""
        host = request.headers.get("Host")
        if host is not None and not _is_loopback(_host_name(host)):
            return error_response(421, "misdirected_request",
                                  "this daemon has no API keys and answers only to a loopback host name")
        origin = request.headers.get("Origin")
        if origin is not None and not self.allows(origin):
            parts = urlsplit(origin)
            if not (parts.scheme in ("http", "https") and parts.hostname and _is_loopback(parts.hostname)):
                return error_response(403, "origin_not_allowed",
                                      "requests from web pages of another origin are refused: this daemon has no "
                                      "API keys (configure auth.keys, or list the origin in cors.allow_origins)")
        return None

    def preflight(self, origin: str) -> web.Response:
        """The answer to a preflight from ``origin``: 204 with the allow headers, or 403."""
        if not self.allows(origin):
            return error_response(403, "origin_not_allowed", "this origin is not in cors.allow_origins",
                                  headers={"Vary": "Origin"})
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                   "Access-Control-Allow-Methods": ALLOW_METHODS, "Access-Control-Allow-Headers": ALLOW_HEADERS,
                   "Access-Control-Max-Age": self.max_age}
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return web.Response(status=204, headers=headers)

    def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the CORS headers of an actual (not preflight) response, before it is sent."""
        origin = request.headers.get("Origin")
        if not self.enabled or origin is None or "Access-Control-Allow-Origin" in response.headers:
            return
        vary = response.headers.get("Vary")
        if vary is None:
            response.headers["Vary"] = "Origin"
        elif "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin"
        if not self.allows(origin):
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        if self.credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"


def make_cors_middleware(policy: CorsPolicy) -> Middleware:
    """The browser guard (keyless daemons) and preflight answers; runs before authentication."""

    @web.middleware
    async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if policy.keyless():
            refusal = policy.browser_refusal(request)
            if refusal is not None:
                return refusal
        origin = request.headers.get("Origin")
        if (policy.enabled and origin is not None and request.method == "OPTIONS"
                and "Access-Control-Request-Method" in request.headers):
            return policy.preflight(origin)
        return await handler(request)

    return cors_middleware


def make_prepare_hook(policy: CorsPolicy) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook: streamed responses (SSE, ``/mcp``) send their
    headers before a middleware could add any, so the CORS headers go on here."""

    async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
        policy.decorate(request, response)

    return add_cors_headers
