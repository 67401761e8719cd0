"""``AsyncClient``: the REST API, streamed ingest, the WebSocket API and the SSE feed.

One pooled aiohttp session per client (open it with ``async with`` or close it with
:meth:`AsyncClient.close`). Calls that are safe to repeat are retried with exponential
backoff and jitter when the connection fails or the server answers 429/502/503/504; every
call is retried when the connection could not even be opened (nothing reached the server).
See :data:`IDEMPOTENT` for which calls count as safe to repeat.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, Final, Self

import aiohttp
import msgspec
from yarl import URL

from .errors import ConnectionFailed, RequestTimeout, S5vecError, error_from
from .results import (
    BatchResult,
    BulkResult,
    CollectionInfo,
    FindResult,
    IngestResult,
    Record,
    SearchResponse,
    collection_info,
)
from .retry import RETRY_STATUSES, RetryPolicy
from .sse import UpdateStream
from .websocket import WebSocketSession
from .wire import API, ENCODER, decode, record_body, search_body, segment

DEFAULT_URL: Final = "http://127.0.0.1:7533"
MAX_BATCH: Final = 10_000  # records per batch request (the server's limit)
INGEST_CHUNK_BYTES: Final = 256 << 10
_SEARCH: Final = msgspec.json.Decoder(SearchResponse)
_BATCH: Final = msgspec.json.Decoder(BatchResult)
_INGEST: Final = msgspec.json.Decoder(IngestResult)
_BULK: Final = msgspec.json.Decoder(BulkResult)
_FIND: Final = msgspec.json.Decoder(FindResult)
_RECORD: Final = msgspec.json.Decoder(Record)
_LARGE_BODY: Final = 1 << 20
FIND_QUERY_BYTES: Final = 2_048  # a find filter longer than this (JSON) is sent in a POST body

#: Which calls are retried (after a broken connection, a timeout, or 429/502/503/504).
#: Reads and searches change nothing. Upserts replace the record with the same id, so
#: sending one twice leaves the same state (a retried upsert may produce one more
#: ``vector_updated`` event, and records without a ``timestamp`` get the later ingest
#: time). ``create_collection`` answers 200 when an identical collection exists. Deleting
#: by a list of ids is retried (a repeat finds nothing more to delete, so ``deleted`` may
#: under-count). Not retried: ``delete`` of one record (a repeat would say 404),
#: ``delete_many`` by filter (a repeat could delete records written in between),
#: ``drop_collection``, and ``ingest`` from an iterator (the stream cannot be replayed).
IDEMPOTENT: Final = frozenset({
    "health", "ready", "list_collections", "get_collection", "create_collection", "get", "find",
    "search", "upsert", "upsert_batch", "update_metadata", "delete_many(ids)", "statistics", "checkpoint",
    "migrate", "tune_collection", "ingest(bytes)", "bulk_upsert",
})


class AsyncClient:
    """Asynchronous client of one s5vec daemon.

    ``url`` defaults to ``$S5VEC_URL`` or http://127.0.0.1:7533, ``api_key`` to
    ``$S5VEC_API_KEY`` (sent as a bearer token). ``timeout`` is seconds per request (None:
    no limit); ``retries`` how many times a safe-to-repeat call is tried again (see
    :data:`IDEMPOTENT`). Use it from one event loop; it is not thread-safe (the
    synchronous :class:`~s5vec.client.Client` wraps it for other threads).
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float | None = 30.0,
                 retries: int = 3, retry: RetryPolicy | None = None, connections: int = 16) -> None:
        self.url = (url or os.environ.get("S5VEC_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else (os.environ.get("S5VEC_API_KEY") or None)
        self.timeout = timeout
        self.retry = retry or RetryPolicy(retries=retries)
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    # ---------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Self:
        self.session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def session(self) -> aiohttp.ClientSession:
        """The pooled session, opened on first use (in the running event loop)."""
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections), headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        """Close the connection pool (idempotent)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def endpoint(self, path: str) -> URL:
        """The absolute URL of ``path`` (already percent-encoded)."""
        return URL(self.url + path, encoded=True)

    # ------------------------------------------------------------------ transport
    async def request(self, method: str, path: str, *, body: Any = None, data: Any = None,
                      params: Mapping[str, str] | None = None, idempotent: bool = True,
                      timeout: aiohttp.ClientTimeout | None = None, headers: Mapping[str, str] | None = None,
                      retries: int | None = None) -> bytes:
        """Send one request and return the body of a 2xx answer; raises the mapped
        :class:`S5vecError` otherwise. ``body`` is encoded as JSON; ``data`` is sent as is.
        Retried per the policy (at most ``retries`` times, default the client's) when
        ``idempotent``, and also otherwise when the connection could not be opened."""
        payload = ENCODER.encode(body) if body is not None else data
        options: dict[str, Any] = {"headers": dict(headers or {})}
        if body is not None:
            options["headers"]["Content-Type"] = "application/json"
        if params is not None:
            options["params"] = params
        if timeout is not None:
            options["timeout"] = timeout
        limit = self.retry.retries if retries is None else retries
        url = self.endpoint(path)
        attempt = 0
        while True:
            retry_after: str | None = None
            try:
                # a large bytes body as a fresh file object per attempt: aiohttp sends it in
                # pieces (it warns about, and blocks the loop on, one >1 MiB bytes write)
                sent = io.BytesIO(payload) if isinstance(payload, bytes) and len(payload) > _LARGE_BODY else payload
                async with self.session().request(method, url, data=sent, **options) as resp:
                    raw = await resp.read()
                    if resp.status < 400:
                        return raw
                    error: S5vecError = error_from(resp.status, decode(raw))
                    retry_after = resp.headers.get("Retry-After")
                    retryable = idempotent and resp.status in RETRY_STATUSES
            except aiohttp.ClientConnectorError as exc:  # the connection was never opened
                error, retryable = ConnectionFailed(f"cannot connect to {self.url}: {exc.os_error or exc}",
                                                    code="connection_failed"), True
            except TimeoutError:  # aiohttp's timeouts included
                error = RequestTimeout(f"no answer from {self.url} within {self.timeout} s", code="timeout")
                retryable = idempotent
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
                error = ConnectionFailed(f"connection to {self.url} broke: {exc}", code="connection_failed")
                retryable = idempotent
            if not retryable or attempt >= limit:
                raise error
            await asyncio.sleep(self.retry.delay(attempt, retry_after))
            attempt += 1

    async def _json(self, method: str, path: str, body: Any = None, *, idempotent: bool = True,
                    params: Mapping[str, str] | None = None) -> Any:
        return decode(await self.request(method, path, body=body, idempotent=idempotent, params=params))

    # --------------------------------------------------------------------- health
    async def health(self) -> dict[str, Any]:
        """``GET /health``: status (ok / degraded / starting), version, storage, LSNs."""
        result: dict[str, Any] = await self._json("GET", "/health")
        return result

    async def ready(self) -> bool:
        """Whether the daemon answers and has loaded its data (``GET /ready``); one attempt."""
        try:
            await self.request("GET", "/ready", retries=0)
        except S5vecError:
            return False
        return True

    # ---------------------------------------------------------------- collections
    async def list_collections(self) -> list[CollectionInfo]:
        data = await self._json("GET", f"{API}/collections")
        return [collection_info(c) for c in data["collections"]]

    async def create_collection(self, name: str, dimension: int, metric: str = "cosine", *,
                                schema: str | None = None, hnsw: Mapping[str, Any] | None = None,
                                ivf: Mapping[str, Any] | None = None,
                                payload_indexes: Mapping[str, str] | None = None,
                                recent_threshold_s: float | None = None, window_s: float | None = None,
                                segment_records: int | None = None,
                                embedding_model: str | None = None) -> CollectionInfo:
        """Create a collection (metric cosine, l2 or ip); an identical existing one is
        returned as is. Raises Conflict when one exists with other settings.
        ``embedding_model`` lets records and searches send ``text`` instead of vectors."""
        body: dict[str, Any] = {"name": name, "dimension": dimension, "metric": metric}
        for key, value in (("schema", schema), ("hnsw", hnsw), ("ivf", ivf), ("payload_indexes", payload_indexes),
                           ("recent_threshold_s", recent_threshold_s), ("window_s", window_s),
                           ("segment_records", segment_records), ("embedding_model", embedding_model)):
            if value is not None:
                body[key] = value
        return collection_info(await self._json("POST", f"{API}/collections", body))

    async def get_collection(self, name: str) -> CollectionInfo:
        return collection_info(await self._json("GET", f"{API}/collections/{segment(name)}"))

    async def drop_collection(self, name: str) -> None:
        """Delete a collection and all its records (not retried)."""
        await self.request("DELETE", f"{API}/collections/{segment(name)}", idempotent=False)

    async def tune_collection(self, name: str, target_recall: float = 0.95, sample: int = 200) -> dict[str, Any]:
        """Pick ``ef``/``nprobe`` meeting ``target_recall`` against exact search."""
        result: dict[str, Any] = await self._json("POST", f"{API}/collections/{segment(name)}/tune",
                                                  {"target_recall": target_recall, "sample": sample})
        return result

    # -------------------------------------------------------------------- records
    async def upsert(self, collection: str, id: str | int | None, vector: Any = None,
                     metadata: Mapping[str, Any] | None = None, timestamp: float | str | None = None, *,
                     text: str | None = None) -> str:
        """Insert or replace one record, acknowledged once durable; returns its id.
        ``text`` instead of ``vector`` on a collection with an embedding model."""
        data = await self._json("POST", f"{API}/collections/{segment(collection)}/vectors",
                                record_body(id, vector, metadata, timestamp, text))
        return str(data["id"])

    async def upsert_batch(self, collection: str, records: Iterable[Record | Mapping[str, Any]]) -> BatchResult:
        """Upsert many records (``Record`` or dicts with id, vector, metadata?, timestamp?),
        sent in requests of at most 10,000. A rejected record does not sink the others:
        see ``errors`` (``index`` counts from 0 over all of ``records``)."""
        path = f"{API}/collections/{segment(collection)}/vectors/batch"
        successful = failed = 0
        errors: list[Any] = []
        offset = 0
        chunk: list[Any] = []

        async def send() -> None:
            nonlocal successful, failed, offset
            result = _BATCH.decode(await self.request("POST", path, body={"vectors": chunk}))
            successful += result.successful
            failed += result.failed
            errors.extend(msgspec.structs.replace(e, index=e.index + offset) for e in result.errors)
            offset += len(chunk)

        for record in records:
            chunk.append(record)
            if len(chunk) == MAX_BATCH:
                await send()
                chunk = []
        if chunk:
            await send()
        return BatchResult(successful, failed, errors)

    async def get(self, collection: str, id: str | int, include_vector: bool = True) -> Record:
        """Fetch one record; raises RecordNotFound."""
        raw = await self.request("GET", f"{API}/collections/{segment(collection)}/vectors/{segment(id)}",
                                 params={"include_vector": "true" if include_vector else "false"})
        return _RECORD.decode(raw)

    async def update_metadata(self, collection: str, id: str | int, metadata: Mapping[str, Any], *,
                              merge: bool = False) -> None:
        """Replace a record's metadata without re-sending its vector (PUT); with ``merge``,
        merge ``metadata`` into it instead (PATCH, JSON Merge Patch: ``None`` deletes a key,
        objects merge recursively). Raises RecordNotFound."""
        await self.request("PATCH" if merge else "PUT",
                           f"{API}/collections/{segment(collection)}/vectors/{segment(id)}", body={"metadata": metadata})

    async def delete(self, collection: str, id: str | int) -> None:
        """Delete one record; raises RecordNotFound if it does not exist (not retried)."""
        await self.request("DELETE", f"{API}/collections/{segment(collection)}/vectors/{segment(id)}",
                           idempotent=False)

    async def delete_many(self, collection: str, ids: Sequence[str | int] | None = None,
                          filter: Mapping[str, Any] | None = None) -> int:
        """Delete by ids or by metadata filter (exactly one); returns how many existed."""
        body = {"ids": list(ids)} if ids is not None else {"filter": filter}
        data = await self._json("POST", f"{API}/collections/{segment(collection)}/vectors/delete", body,
                                idempotent=ids is not None)
        return int(data["deleted"])

    async def find(self, collection: str, filter: Mapping[str, Any] | None = None, limit: int = 100,
                   offset: int = 0, include_vector: bool = False) -> FindResult:
        """Records whose metadata matches ``filter`` (all when None), in storage order:
        at most ``limit`` (≤ 1,000) from ``offset``, and how many match in all (``total``).
        A filter longer than ``FIND_QUERY_BYTES`` goes in the body of ``POST .../vectors/query``
        (a request line is limited to 8,190 bytes), a shorter one in ``GET .../vectors?filter=``."""
        encoded = ENCODER.encode(filter).decode() if filter else None
        if encoded is not None and len(encoded) > FIND_QUERY_BYTES:
            body = {"filter": filter, "limit": limit, "offset": offset, "include_vector": include_vector}
            return _FIND.decode(await self.request("POST", f"{API}/collections/{segment(collection)}/vectors/query",
                                                   body=body))
        params = {"limit": str(limit), "offset": str(offset), "include_vector": "true" if include_vector else "false"}
        if encoded is not None:
            params["filter"] = encoded
        return _FIND.decode(await self.request("GET", f"{API}/collections/{segment(collection)}/vectors",
                                               params=params))

    async def export_lines(self, collection: str, include_vector: bool = True,
                           after: str | None = None) -> AsyncGenerator[bytes, None]:
        """Every record as one NDJSON line (bytes, newline included) in id order, streamed
        from ``GET .../export``: the format :meth:`ingest` reads. ``after`` resumes after
        that id. Records deleted during the export are skipped, ones added are not included."""
        params = {"include_vector": "true" if include_vector else "false"}
        if after is not None:
            params["after"] = after
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout,
                                        sock_read=self.timeout)
        url = self.endpoint(f"{API}/collections/{segment(collection)}/export")
        try:
            async with self.session().get(url, params=params, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise error_from(resp.status, decode(await resp.read()))
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line:
                            yield line + b"\n"
                if buffer.strip():
                    yield buffer + b"\n"
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionFailed(f"cannot connect to {self.url}: {exc.os_error or exc}",
                                   code="connection_failed") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ConnectionFailed(f"the export from {self.url} broke: {exc}", code="connection_failed") from None
        except RuntimeError as exc:  # aiohttp's stream reader, when the connection closed under it
            if "Connection closed" not in str(exc):
                raise
            raise ConnectionFailed(f"the export from {self.url} broke: the connection closed",
                                   code="connection_failed") from None
        except TimeoutError:
            raise RequestTimeout(f"the export from {self.url} stalled for {self.timeout} s", code="timeout") from None

    async def export(self, collection: str, include_vector: bool = True,
                     after: str | None = None) -> AsyncGenerator[Record, None]:
        """Every record of a collection in id order (see :meth:`export_lines`). Raises
        S5vecError when the stream breaks off or holds something other than records."""
        async for line in self.export_lines(collection, include_vector, after):
            try:
                record = _RECORD.decode(line)
            except msgspec.DecodeError as exc:  # a proxy's page or a server fault inside the stream
                raise S5vecError(f"the export from {self.url} is not NDJSON records: {exc}",
                                 code="invalid_response") from None
            yield record

    # --------------------------------------------------------------------- search
    async def search(self, collection: str, vector: Any = None, k: int = 10,
                     filter: Mapping[str, Any] | None = None, *, text: str | None = None,
                     ef: int | None = None, nprobe: int | None = None, include_metadata: bool | None = None,
                     include_vector: bool | None = None, score_threshold: float | None = None,
                     search_recent: bool | None = None, search_historical: bool | None = None,
                     timeout_ms: float | None = None, merge_strategy: str | None = None,
                     tier_weights: Sequence[float] | None = None,
                     scoring: Mapping[str, Any] | None = None, rerank: int | None = None) -> SearchResponse:
        """The ``k`` nearest records to ``vector`` passing ``filter`` (Mongo-style).
        ``ef``/``nprobe``/``rerank`` (historical candidates scored exactly) trade speed for
        recall per tier, overriding the collection's calibrated values; ``scoring`` adds time decay and
        popularity boosts ({"decay": {...}, "popularity": {...}}, see docs/api.md). ``text``
        instead of ``vector`` on a collection with an embedding model."""
        body = search_body(vector, k, filter, {
            "ef": ef, "ivf_nprobe": nprobe, "ivf_rerank": rerank, "include_metadata": include_metadata,
            "include_vector": include_vector,
            "score_threshold": score_threshold, "search_recent": search_recent,
            "search_historical": search_historical, "timeout_ms": timeout_ms, "merge_strategy": merge_strategy,
            "tier_weights": list(tier_weights) if tier_weights is not None else None, "scoring": scoring}, text)
        return _SEARCH.decode(await self.request("POST", f"{API}/collections/{segment(collection)}/search",
                                                 body=body))

    # --------------------------------------------------------------------- ingest
    async def ingest(self, collection: str,
                     records: Iterable[Record | Mapping[str, Any] | bytes]
                     | AsyncIterable[Record | Mapping[str, Any] | bytes] | bytes,
                     progress: Callable[[int], None] | None = None) -> IngestResult:
        """Stream records as NDJSON (a chunked request body; any length) to
        ``POST .../ingest``: applied in durable batches, bad lines reported by number (line
        n is the n-th record). Items may be Records, dicts or already-encoded JSON lines
        (bytes). ``progress(n)`` is called as records are sent. Only a ``bytes`` body is
        retried."""
        path = f"{API}/collections/{segment(collection)}/ingest"
        no_limit = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout)
        headers = {"Content-Type": "application/x-ndjson"}
        if isinstance(records, bytes):
            raw = await self.request("POST", path, data=records, timeout=no_limit, headers=headers)
        else:
            raw = await self.request("POST", path, data=_ndjson(records, progress), timeout=no_limit,
                                     headers=headers, idempotent=False)
        return _INGEST.decode(raw)

    async def bulk_upsert(self, collection: str, data: Any, *, rows: int | None = None) -> BulkResult:
        """``POST .../bulk``: one request, all or nothing, answered once durable. ``data`` is
        an Arrow IPC stream (bytes) or a pyarrow Table/RecordBatch in the bulk layout
        (:func:`s5vec.client.bulk.arrow_table` builds one from ids, vectors, metadata and
        timestamps). Retried like an upsert (the same ids are written again)."""
        from .bulk import ARROW_STREAM, arrow_stream

        if not isinstance(data, (bytes, bytearray, memoryview)):
            rows = data.num_rows if rows is None else rows
            data = arrow_stream(data)
        params = {"rows": str(rows)} if rows is not None else None
        no_limit = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout)
        raw = await self.request("POST", f"{API}/collections/{segment(collection)}/bulk", data=bytes(data),
                                 timeout=no_limit, headers={"Content-Type": ARROW_STREAM}, params=params)
        return _BULK.decode(raw)

    # ---------------------------------------------------------------------- admin
    async def statistics(self) -> dict[str, Any]:
        """``GET /api/v1/admin/statistics`` (admin scope): collections, WAL, storage."""
        result: dict[str, Any] = await self._json("GET", f"{API}/admin/statistics")
        return result

    async def checkpoint(self) -> dict[str, Any]:
        """Write a checkpoint now (admin scope): ``{"manifest", "lsn"}``."""
        result: dict[str, Any] = await self._json("POST", f"{API}/admin/checkpoint")
        return result

    async def migrate(self) -> dict[str, Any]:
        """Move records older than each collection's threshold to the historical tier now."""
        result: dict[str, Any] = await self._json("POST", f"{API}/admin/migrate")
        return result

    # ---------------------------------------------------------------------- feeds
    def websocket(self, *, reconnect: bool = True, reconnect_attempts: int = 10,
                  max_queue: int = 1000) -> WebSocketSession:
        """The WebSocket API: ``async with client.websocket() as ws``. See
        :class:`~s5vec.client.websocket.WebSocketSession`."""
        return WebSocketSession(self, reconnect=reconnect, reconnect_attempts=reconnect_attempts,
                                max_queue=max_queue)

    def updates(self, collections: Sequence[str] | None = None, *, types: Sequence[str] | None = None,
                filter: Mapping[str, Any] | None = None, include_vector: bool = False,
                last_event_id: str | int | None = None, reconnect: bool = True,
                reconnect_attempts: int = 10) -> UpdateStream:
        """The change feed over server-sent events: ``async for event in client.updates()``.
        See :class:`~s5vec.client.sse.UpdateStream`."""
        return UpdateStream(self, collections, types=types, filter=filter, include_vector=include_vector,
                            last_event_id=last_event_id, reconnect=reconnect,
                            reconnect_attempts=reconnect_attempts)


async def _ndjson(records: Iterable[Any] | AsyncIterable[Any],
                  progress: Callable[[int], None] | None) -> AsyncIterator[bytes]:
    """Records as NDJSON chunks of about INGEST_CHUNK_BYTES."""
    parts: list[bytes] = []
    size = count = 0

    def line(item: Any) -> bytes:
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(item)
            return data if data.endswith(b"\n") else data + b"\n"
        return ENCODER.encode(item) + b"\n"

    async def items() -> AsyncIterator[Any]:
        if isinstance(records, AsyncIterable):
            async for item in records:
                yield item
        else:
            for item in records:
                yield item

    async for item in items():
        data = line(item)
        parts.append(data)
        size += len(data)
        count += 1
        if size >= INGEST_CHUNK_BYTES:
            yield b"".join(parts)
            if progress is not None:
                progress(count)
            parts, size, count = [], 0, 0
    if parts:
        yield b"".join(parts)
        if progress is not None:
            progress(count)

