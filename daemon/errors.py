"""The only module that knows HTTP statuses: one JSON error shape for every failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Final

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, BadStatusLine, HttpProcessingError, LineTooLong

from s5vec.index import (
    CollectionExists, CollectionNotFound, DimensionMismatch, IndexError_, InvalidRecord, RecordNotFound,
)
from s5vec.index.errors import EmbeddingError, SearchTimeout
from s5vec.engine import DataDirLocked, ReadOnlyDatabase
from s5vec.engine.errors import NotWriter
from s5vec.ops.backup import BackupNotFound
from s5vec.ops.jobs import JobBusy, UnknownJob
from s5vec.storage import BackendUnavailable, BlobCorrupt, BlobNotFound, StorageError, StorageFull, WalFailed

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error raised by a handler with its code and status already decided."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class RequestInvalid(ApiError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(400, "invalid_request", message, field)


class Unauthorized(ApiError):
    def __init__(self, message: str = "missing or unknown API key") -> None:
        super().__init__(401, "unauthorized", message)


class Forbidden(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(403, "forbidden", message)


STATUS: Final[tuple[tuple[type[Exception], int, str], ...]] = (
    (EmbeddingError, 422, "embedding_error"),
    (InvalidRecord, 400, "invalid_request"),
    (RecordNotFound, 404, "record_not_found"),
    (CollectionNotFound, 404, "collection_not_found"),
    (CollectionExists, 409, "collection_exists"),
    (DimensionMismatch, 422, "dimension_mismatch"),
    (SearchTimeout, 504, "search_timeout"),  # past engine.search_timeout_s: cancelled, nothing changed
    (IndexError_, 400, "invalid_request"),
    (JobBusy, 409, "job_running"),
    (UnknownJob, 404, "job_not_found"),
    (BackupNotFound, 404, "backup_not_found"),
    (BlobNotFound, 500, "blob_missing"),
    (BlobCorrupt, 500, "storage_corrupt"),
    (BackendUnavailable, 503, "storage_unavailable"),
    (DataDirLocked, 503, "storage_unavailable"),
    (StorageFull, 507, "storage_full"),  # nothing was written; retry once space is freed
    (WalFailed, 503, "storage_read_only"),
    (ReadOnlyDatabase, 403, "read_only_replica"),
    (NotWriter, 503, "not_writer"),  # replaced by another writer, or its lease ran out: writes go elsewhere  # a follower (MCP, WebSocket writes): the writer takes writes  # the WAL refuses writes until the daemon restarts
    (StorageError, 503, "storage_error"),
)
_HTTP_CODES: Final = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                      405: "method_not_allowed", 413: "payload_too_large", 414: "uri_too_long",
                      415: "unsupported_media_type", 421: "misdirected_request", 431: "headers_too_large",
                      504: "timeout"}
MAX_REQUEST_LINE_BYTES: Final = 8190  # aiohttp's default limit of the request line
# one header line; not equal to the request-line limit, so the limit a LineTooLong names tells which it was
MAX_HEADER_BYTES: Final = 8192
_ENCODER: Final = msgspec.json.Encoder()
# nginx's "client closed request": the status the metrics give a request whose client left
# before the answer; never sent, and not a 5xx, so error-rate alerts do not fire on it
CLIENT_CLOSED_REQUEST: Final = 499


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, str] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return web.Response(status=status, body=_ENCODER.encode({"error": body}) + b"\n",
                        content_type="application/json", headers=headers)


def http_error(status: int, message: str) -> web.Response:
    """The error shape for a bare HTTP status and its text (e.g. an embedded ASGI app's
    ``text/plain`` 413)."""
    return error_response(status, _HTTP_CODES.get(status, "http_error"), message)


def describe(exc: BaseException) -> tuple[int, str, str, str | None, dict[str, str] | None]:
    """``(status, code, message, field, headers)`` of the error a client sees for ``exc``
    (the one mapping; REST and WebSocket replies both use it)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message, exc.field, None
    if isinstance(exc, msgspec.ValidationError):
        text = str(exc)
        field = text.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in text else None
        return 400, "invalid_request", text, getattr(exc, "field", field), None
    if isinstance(exc, msgspec.DecodeError):
        return 400, "invalid_request", f"malformed JSON body: {exc}", getattr(exc, "field", None), None
    if isinstance(exc, web.HTTPException):
        if exc.status == 413:
            return 413, "payload_too_large", "request body is larger than http.max_body_bytes", None, None
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        # aiohttp's own text (e.g. "No WebSocket UPGRADE hdr") says more than the bare reason
        text = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        return exc.status, _HTTP_CODES.get(exc.status, "http_error"), text or exc.reason, None, headers
    for kind, status, code in STATUS:
        if isinstance(exc, kind):
            if isinstance(exc, (InvalidRecord, CollectionExists)):
                return status, code, str(exc), exc.field, None
            if status >= 500:
                log.error("%s: %s", code, exc)
            return status, code, str(exc), None, None
    log.exception("unhandled error", exc_info=exc)
    return 500, "internal_error", "internal server error", None, None


def describe_parser_error(exc: HttpProcessingError) -> tuple[int, str, str]:
    """``(status, code, message)`` for a request aiohttp's HTTP parser rejected. The message
    never repeats the request's bytes: a header line may hold an API key."""
    if isinstance(exc, LineTooLong):
        if exc.args[1:2] == (MAX_HEADER_BYTES,):
            return 431, "headers_too_large", f"a request header is longer than {MAX_HEADER_BYTES} bytes"
        return 414, "uri_too_long", (f"the request line is longer than {MAX_REQUEST_LINE_BYTES} bytes; send a "
                                     "large filter in the body of POST /api/v1/collections/{c}/vectors/query "
                                     "instead of ?filter=")
    if "Too many headers" in exc.message:
        return 431, "headers_too_large", "the request has too many header lines"
    if isinstance(exc, BadStatusLine):
        return 400, "invalid_request", "malformed HTTP request line"
    # the parser's reason comes first ("Invalid header value char:"), the offending bytes after
    reason = exc.message.split("\n", 1)[0].split(":", 1)[0].strip()[:100]
    return 400, "invalid_request", f"malformed HTTP request: {reason or 'unparseable'}"


def protocol_error(request: web.BaseRequest, status: int, exc: BaseException | None) -> web.Response:
    """The answer to a request that failed outside the middlewares: one the HTTP parser
    rejected (one WARNING line, no traceback, no header value), or an error aiohttp caught
    itself (``status`` 500, or 504 without ``exc``)."""
    if isinstance(exc, HttpProcessingError):
        status, code, message = describe_parser_error(exc)
        # non-HTTP traffic (TLS, scanners) on the port is internet noise, as aiohttp judges it
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
        log.log(level, "rejected a malformed request from %s: %d %s", request.remote, status, message)
        return error_response(status, code, message)
    if exc is not None:
        status, code, message, field, headers = describe(exc)
        return error_response(status, code, message, field, headers)
    return http_error(status, HTTPStatus(status).phrase)


def translate(exc: BaseException) -> web.Response:
    """Map any exception to the error response a client sees."""
    status, code, message, field, headers = describe(exc)
    return error_response(status, code, message, field, headers)


def client_gone(request: web.BaseRequest, exc: BaseException) -> bool:
    """Whether ``exc`` only says that the client went away (reset or closed its connection):
    not a server error."""
    if not isinstance(exc, (ConnectionError, asyncio.CancelledError)):
        return False
    transport = request.transport
    return transport is None or transport.is_closing()


def response_started(request: web.BaseRequest) -> bool:
    """Whether a status line already went out (a streamed response, an SSE stream or a
    WebSocket handshake was prepared): no other response can follow on this connection."""
    return request.writer is not None and request.writer.output_size > 0


def abort(request: web.Request, exc: BaseException) -> web.Response:
    """A failure after the response started: close the connection without the final chunk,
    so the client sees a broken stream, never a second response inside the body. Returns
    the response the metrics count; it is never sent."""
    status, code, message, _, _ = describe(exc)  # logs a server error
    log.warning("%s %s failed after its response started (%d %s: %s): connection closed",
                request.method, request.path, status, code, message)
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return abort(request, exc) if response_started(request) else translate(exc)
    except Exception as exc:  # the one translation point
        if client_gone(request, exc):
            log.debug("%s %s: the client went away (%r)", request.method, request.path, exc)
            return web.Response(status=CLIENT_CLOSED_REQUEST)  # counted by the metrics, never sent
        return abort(request, exc) if response_started(request) else translate(exc)
