"""API keys with scopes (``read`` < ``write`` < ``admin``), compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from .config import ApiKey
from .errors import Forbidden, Handler, Unauthorized

RANK: Final = {"read": 1, "write": 2, "admin": 3}
WS_PATH: Final = "/api/v1/ws"  # authenticates itself: bearer header or a first "auth" message


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyRing:
    """Resolve a presented bearer token to the highest scope rank it grants (0 = none)."""

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self.replace(keys)

    def replace(self, keys: tuple[ApiKey, ...]) -> None:
        """Swap in a new set of keys (SIGHUP reload); requests after this see only them."""
        self._keys = [(_digest(k.key), max(RANK[s] for s in k.scopes)) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def rank(self, token: str) -> int:
        presented = _digest(token)
        rank = 0
        for digest, key_rank in self._keys:  # no early exit: timing does not reveal which key
            if hmac.compare_digest(digest, presented):
                rank = max(rank, key_rank)
        return rank


METRICS_PATH: Final = "/metrics"
MCP_PATH: Final = "/mcp"  # MCP streamable HTTP: read-only tools, so the read scope


def scope_for(request: web.Request, metrics_scope: str | None = None) -> str | None:
    """Scope a route needs: None for public routes, else read/write/admin.
    ``metrics_scope``: what ``/metrics`` needs (None = public)."""
    path = request.path
    if path == METRICS_PATH:
        return metrics_scope
    if path == MCP_PATH:
        return "read"
    if path in ("/health", "/ready", "/openapi.json", WS_PATH) or not path.startswith("/api/"):
        return None
    if path.startswith("/api/v1/admin"):
        return "admin"
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    if request.method == "POST" and (path.endswith("/search") or path.endswith("/vectors/query")):
        return "read"  # reads with a body
    return "write"


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if one was sent."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def make_auth_middleware(ring: KeyRing, metrics_scope: str | None = None) -> Middleware:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not ring.enabled:
            return await handler(request)
        needed = scope_for(request, metrics_scope)
        if needed is None:
            return await handler(request)
        token = bearer_token(request)
        if token is None:
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        rank = ring.rank(token)
        if rank == 0:
            raise Unauthorized("unknown API key")
        if rank < RANK[needed]:
            raise Forbidden(f"this API key lacks the '{needed}' scope")
        return await handler(request)

    return auth_middleware
