"""Exceptions of the Python client, mapped from the server's error codes.

Every failure the server reports has one shape, ``{"error": {"code", "message", "field"?}}``;
:func:`error_from` turns it into the matching subclass of :class:`S5vecError`, chosen by
``code`` first and by HTTP status for codes this client does not know.
"""

from __future__ import annotations

from typing import Any, Final


class S5vecError(Exception):
    """Base of every client error: ``status`` (HTTP status, None when no answer came back),
    ``code`` (the server's error code) and ``field`` (the offending request field, if named)."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error",
                 field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.field = message, status, code, field

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"


class InvalidRequest(S5vecError):
    """400: malformed or invalid input; ``field`` names what to fix."""


class DimensionMismatch(InvalidRequest):
    """422: a vector's length differs from the collection's dimension."""


class Unauthorized(S5vecError):
    """401: no API key, or one the server does not know."""


class Forbidden(S5vecError):
    """403: the API key lacks the scope this call needs."""


class NotFound(S5vecError):
    """404: no such collection, record or subscription."""


class CollectionNotFound(NotFound):
    """404 ``collection_not_found``."""


class RecordNotFound(NotFound):
    """404 ``record_not_found``."""


class Conflict(S5vecError):
    """409: a collection (or subscription name) exists with other settings."""


class PayloadTooLarge(S5vecError):
    """413: the request body is larger than the server's ``http.max_body_bytes``."""


class RateLimited(S5vecError):
    """429: too many messages or subscriptions on one connection."""


class Unavailable(S5vecError):
    """503: the server is starting, or its storage backend does not answer."""


class ServerError(S5vecError):
    """500: the server failed; the message carries no internals."""


class ConnectionFailed(S5vecError):
    """No answer: the server could not be reached, or the connection broke mid-request
    (after the configured retries)."""


class RequestTimeout(S5vecError):
    """The server did not answer within the client's timeout."""


_BY_CODE: Final[dict[str, type[S5vecError]]] = {
    "invalid_request": InvalidRequest, "dimension_mismatch": DimensionMismatch,
    "unauthorized": Unauthorized, "forbidden": Forbidden,
    "collection_not_found": CollectionNotFound, "record_not_found": RecordNotFound,
    "subscription_not_found": NotFound, "not_found": NotFound,
    "collection_exists": Conflict, "subscription_exists": Conflict,
    "payload_too_large": PayloadTooLarge, "rate_limited": RateLimited, "too_many_subscriptions": RateLimited,
    "storage_unavailable": Unavailable, "storage_error": Unavailable,
    "internal_error": ServerError, "blob_missing": ServerError, "storage_corrupt": ServerError,
}
_BY_STATUS: Final[dict[int, type[S5vecError]]] = {
    400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: InvalidRequest,
    409: Conflict, 413: PayloadTooLarge, 415: InvalidRequest, 422: DimensionMismatch, 429: RateLimited,
    502: Unavailable, 503: Unavailable, 504: Unavailable,
}


def error_from(status: int | None, body: Any) -> S5vecError:
    """The exception for an error reply: ``body`` is the decoded JSON (``{"error": {...}}``)
    or anything else (a proxy's HTML page, None), which still maps by ``status``."""
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        code = str(detail.get("code") or "error")
        message = str(detail.get("message") or code)
        field = detail.get("field")
        field = str(field) if field is not None else None
    else:
        code = f"http_{status}" if status is not None else "error"
        message = body if isinstance(body, str) and body else f"HTTP {status}"
        field = None
    kind = _BY_CODE.get(code) or (_BY_STATUS.get(status) if status is not None else None)
    if kind is None:
        kind = ServerError if status is not None and status >= 500 else S5vecError
    return kind(message[:2000], status=status, code=code, field=field)
