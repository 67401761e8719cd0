"""Python client of the s5vec daemon: ``AsyncClient`` (asyncio) and ``Client`` (blocking).

Needs only aiohttp and msgspec (numpy arrays are accepted as vectors when numpy is
installed). The ``s5vec`` command line's client commands live in :mod:`.cli`.
"""

from .async_client import DEFAULT_URL, IDEMPOTENT, AsyncClient
from .errors import (
    CollectionNotFound,
    Conflict,
    ConnectionFailed,
    DimensionMismatch,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RecordNotFound,
    RequestTimeout,
    S5vecError,
    ServerError,
    Unauthorized,
    Unavailable,
)
from .results import (
    BatchResult,
    BulkResult,
    CollectionInfo,
    ErrorDetail,
    Event,
    EventRecord,
    FindResult,
    GetResult,
    IngestResult,
    ItemError,
    LineError,
    Match,
    Notice,
    Record,
    SearchHit,
    SearchResponse,
)
from .retry import RetryPolicy
from .sse import UpdateStream
from .sync_client import Client
from .websocket import Subscription, WebSocketSession

__all__ = [
    "DEFAULT_URL", "IDEMPOTENT", "AsyncClient", "BatchResult", "BulkResult", "Client", "CollectionInfo", "CollectionNotFound",
    "Conflict", "ConnectionFailed", "DimensionMismatch", "ErrorDetail", "Event", "EventRecord", "FindResult", "Forbidden",
    "GetResult", "IngestResult", "InvalidRequest", "ItemError", "LineError", "Match", "NotFound", "Notice",
    "PayloadTooLarge", "RateLimited", "Record", "RecordNotFound", "RequestTimeout", "RetryPolicy", "S5vecError",
    "SearchHit", "SearchResponse", "ServerError", "Subscription", "Unauthorized", "Unavailable", "UpdateStream",
    "WebSocketSession",
]
