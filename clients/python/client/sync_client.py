"""``Client``: the same API, blocking, for scripts and notebooks.

Each ``Client`` runs a private event loop in a background thread and hands every call to
it, so it works the same whether or not the calling thread has a running event loop
(Jupyter, IPython, an asyncio application). A call blocks the calling thread until the
answer comes; inside async code prefer :class:`~s5vec.client.AsyncClient`, which does not.
One ``Client`` may be used from several threads at once.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future
from typing import Any, Generic, Self, TypeVar

from .async_client import AsyncClient
from .results import (
    BatchResult,
    CollectionInfo,
    Event,
    FindResult,
    GetResult,
    BulkResult,
    IngestResult,
    Match,
    Notice,
    Record,
    SearchHit,
    SearchResponse,
)
from .retry import RetryPolicy
from .sse import UpdateStream
from .websocket import Subscription, WebSocketSession

T = TypeVar("T")


class _Loop:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="s5vec-client-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        if threading.current_thread() is self.thread:
            raise RuntimeError("a blocking s5vec Client call from inside its own event loop would deadlock")
        future: Future[T] = asyncio.run_coroutine_threadsafe(_await(coro), self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt in a notebook: stop the call too
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _shut_down(loop: _Loop, client: AsyncClient) -> None:
    if not loop.loop.is_closed():
        loop.run(client.close())
        loop.stop()


class SyncIterator(Generic[T]):
    """A blocking iterator over an async iterator that lives on the client's loop."""

    def __init__(self, loop: _Loop, iterator: AsyncIterator[T], close: Any = None) -> None:
        self._loop, self._iterator, self._close = loop, iterator, close

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self._loop.run(self._iterator.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def __enter__(self) -> SyncIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._close is not None:
            self._loop.run(self._close())


class SyncSubscription(SyncIterator[T]):
    """A blocking :class:`~s5vec.client.websocket.Subscription`: iterate it; ``close()``
    (or leaving ``with``) unsubscribes."""

    def __init__(self, loop: _Loop, sub: Subscription[T]) -> None:
        super().__init__(loop, sub, sub.unsubscribe)
        self.subscription = sub

    @property
    def name(self) -> str:
        return self.subscription.name

    @property
    def results(self) -> list[SearchHit]:
        return self.subscription.results

    @property
    def notices(self) -> list[Notice]:
        return list(self.subscription.notices)


class SyncUpdates(SyncIterator[Event | Notice]):
    """A blocking :class:`~s5vec.client.sse.UpdateStream`; ``last_event_id`` is where it stands."""

    def __init__(self, loop: _Loop, stream: UpdateStream) -> None:
        super().__init__(loop, stream, stream.close)
        self.stream = stream

    def __enter__(self) -> Self:
        self._loop.run(self.stream.connect())
        return self

    @property
    def last_event_id(self) -> str | None:
        return self.stream.last_event_id


class SyncWebSocket:
    """A blocking :class:`~s5vec.client.websocket.WebSocketSession`: ``with client.websocket() as ws``."""

    def __init__(self, loop: _Loop, session: WebSocketSession) -> None:
        self._loop, self.session = loop, session

    def __enter__(self) -> Self:
        self._loop.run(self.session.connect())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self.session.close())

    def upsert(self, collection: str, id: str | int | None, vector: Any = None,
               metadata: Mapping[str, Any] | None = None, timestamp: float | str | None = None, *,
               text: str | None = None) -> str:
        return self._loop.run(self.session.upsert(collection, id, vector, metadata, timestamp, text=text))

    def upsert_batch(self, collection: str, records: Iterable[Record | Mapping[str, Any]]) -> BatchResult:
        return self._loop.run(self.session.upsert_batch(collection, records))

    def delete(self, collection: str, ids: Sequence[str | int] | None = None,
               filter: Mapping[str, Any] | None = None) -> int:
        return self._loop.run(self.session.delete(collection, ids, filter))

    def get(self, collection: str, ids: Sequence[str | int], include_vector: bool = False) -> GetResult:
        return self._loop.run(self.session.get(collection, ids, include_vector))

    def search(self, collection: str, vector: Any = None, k: int = 10, filter: Mapping[str, Any] | None = None,
               **options: Any) -> SearchResponse:
        return self._loop.run(self.session.search(collection, vector, k, filter, **options))

    def ping(self) -> int:
        return self._loop.run(self.session.ping())

    def subscribe(self, collections: Sequence[str] | None = None, filter: Mapping[str, Any] | None = None,
                  **options: Any) -> SyncSubscription[Event | Notice]:
        """Subscribes before returning (so writes after this call are seen)."""
        sub = self.session.subscribe(collections, filter, **options)
        self._loop.run(sub.start())
        return SyncSubscription(self._loop, sub)

    def subscribe_query(self, collection: str, vector: Any, k: int | None = None,
                        **options: Any) -> SyncSubscription[Match | Notice]:
        """Subscribes before returning; ``results`` holds the initial top k."""
        sub = self.session.subscribe_query(collection, vector, k, **options)
        self._loop.run(sub.start())
        return SyncSubscription(self._loop, sub)


class Client:
    """Blocking client of one s5vec daemon; same arguments and methods as
    :class:`~s5vec.client.AsyncClient`. Close it (or use ``with``) to stop its thread."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float | None = 30.0,
                 retries: int = 3, retry: RetryPolicy | None = None, connections: int = 16) -> None:
        self._loop = _Loop()
        self.aio = AsyncClient(url, api_key, timeout=timeout, retries=retries, retry=retry, connections=connections)
        self.url = self.aio.url
        self._finalizer = weakref.finalize(self, _shut_down, self._loop, self.aio)  # if never closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the background loop (idempotent)."""
        self._finalizer()

    def _run(self, coro: Awaitable[T]) -> T:
        return self._loop.run(coro)

    # the REST API -------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._run(self.aio.health())

    def ready(self) -> bool:
        return self._run(self.aio.ready())

    def list_collections(self) -> list[CollectionInfo]:
        return self._run(self.aio.list_collections())

    def create_collection(self, name: str, dimension: int, metric: str = "cosine", **options: Any) -> CollectionInfo:
        return self._run(self.aio.create_collection(name, dimension, metric, **options))

    def get_collection(self, name: str) -> CollectionInfo:
        return self._run(self.aio.get_collection(name))

    def drop_collection(self, name: str) -> None:
        self._run(self.aio.drop_collection(name))

    def tune_collection(self, name: str, target_recall: float = 0.95, sample: int = 200) -> dict[str, Any]:
        return self._run(self.aio.tune_collection(name, target_recall, sample))

    def upsert(self, collection: str, id: str | int | None, vector: Any = None,
               metadata: Mapping[str, Any] | None = None, timestamp: float | str | None = None, *,
               text: str | None = None) -> str:
        return self._run(self.aio.upsert(collection, id, vector, metadata, timestamp, text=text))

    def upsert_batch(self, collection: str, records: Iterable[Record | Mapping[str, Any]]) -> BatchResult:
        return self._run(self.aio.upsert_batch(collection, records))

    def get(self, collection: str, id: str | int, include_vector: bool = True) -> Record:
        return self._run(self.aio.get(collection, id, include_vector))

    def update_metadata(self, collection: str, id: str | int, metadata: Mapping[str, Any], *,
                        merge: bool = False) -> None:
        """Replace a record's metadata (PUT); with ``merge``, merge into it (PATCH, RFC 7396)."""
        self._run(self.aio.update_metadata(collection, id, metadata, merge=merge))

    def delete(self, collection: str, id: str | int) -> None:
        self._run(self.aio.delete(collection, id))

    def delete_many(self, collection: str, ids: Sequence[str | int] | None = None,
                    filter: Mapping[str, Any] | None = None) -> int:
        return self._run(self.aio.delete_many(collection, ids, filter))

    def find(self, collection: str, filter: Mapping[str, Any] | None = None, limit: int = 100, offset: int = 0,
             include_vector: bool = False) -> FindResult:
        return self._run(self.aio.find(collection, filter, limit, offset, include_vector))

    def export(self, collection: str, include_vector: bool = True, after: str | None = None) -> SyncIterator[Record]:
        """Every record in id order, streamed (see :meth:`AsyncClient.export`)."""
        iterator = self.aio.export(collection, include_vector, after)
        return SyncIterator(self._loop, iterator, iterator.aclose)

    def search(self, collection: str, vector: Any = None, k: int = 10, filter: Mapping[str, Any] | None = None,
               **options: Any) -> SearchResponse:
        return self._run(self.aio.search(collection, vector, k, filter, **options))

    def bulk_upsert(self, collection: str, data: Any, *, rows: int | None = None) -> BulkResult:
        """See :meth:`AsyncClient.bulk_upsert`."""
        return self._run(self.aio.bulk_upsert(collection, data, rows=rows))

    def ingest(self, collection: str, records: Iterable[Record | Mapping[str, Any] | bytes] | bytes,
               progress: Any = None) -> IngestResult:
        """Streams from ``records``, which is iterated on the client's loop thread."""
        return self._run(self.aio.ingest(collection, records, progress))

    def statistics(self) -> dict[str, Any]:
        return self._run(self.aio.statistics())

    def checkpoint(self) -> dict[str, Any]:
        return self._run(self.aio.checkpoint())

    def migrate(self) -> dict[str, Any]:
        return self._run(self.aio.migrate())

    # feeds --------------------------------------------------------------------
    def websocket(self, **options: Any) -> SyncWebSocket:
        return SyncWebSocket(self._loop, self.aio.websocket(**options))

    def updates(self, collections: Sequence[str] | None = None, **options: Any) -> SyncUpdates:
        """Blocking iterator over the SSE change feed (see :meth:`AsyncClient.updates`)."""
        return SyncUpdates(self._loop, self.aio.updates(collections, **options))
