"""Single-record upserts gathered into engine batches (REST and WebSocket single upserts)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from s5vec.index import DimensionMismatch, ItemError, RawItem
from s5vec.engine import Database
from s5vec.engine.shipping import DURABILITY
from s5vec.storage import StorageError

from .errors import ApiError, RequestInvalid
from .wire import VectorIn

_Waiter = tuple[RawItem, "asyncio.Future[str]"]


def item_exception(error: ItemError) -> Exception:
    """The error a client sees for one rejected record (400 naming the field, or 422)."""
    if error.code == "dimension_mismatch":
        mismatch: Exception = DimensionMismatch(error.message)
        return mismatch
    field, _, message = error.message.partition(": ")
    if error.code == "embedding_error":  # text on a collection without a (working) model
        return ApiError(422, error.code, error.message, field if message else None)
    return RequestInvalid(error.message, field if message else None)


class SingleUpserts:
    """Upserts of one record each that arrive in the same event-loop iteration (from any
    connection) reach the engine as one batch: one validation pass, one WAL record, one
    apply. Under load batches grow, so the cost per write falls as the rate rises. Each
    caller still gets its own result or error; the records of one batch share an LSN."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._gathering: dict[tuple[str, str | None], list[_Waiter]] = {}
        self._running: set[asyncio.Task[Any]] = set()

    async def upsert(self, name: str, body: VectorIn) -> str:
        """Durably upsert one record; returns its id. Raises the record's error (400/422)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        item = RawItem(body.id, body.vector, body.metadata, body.timestamp, body.text)
        key = (name, DURABILITY.get())  # a batch is acknowledged as one: by one durability
        gathering = self._gathering.get(key)
        if gathering is not None:
            gathering.append((item, future))
            return await future
        gathering = self._gathering[key] = [(item, future)]
        try:
            await asyncio.sleep(0)  # the other upserts of this iteration join
        finally:  # submitted even if this caller was cancelled: the others wait for it
            del self._gathering[key]
            task = asyncio.ensure_future(self.db.upsert(name, [i for i, _ in gathering]))
            self._running.add(task)
            task.add_done_callback(functools.partial(self._settle, gathering))
        return await future

    def _settle(self, gathering: list[_Waiter], task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if task.cancelled() or task.exception() is not None:
            error = StorageError("the write was cancelled") if task.cancelled() else task.exception()
            for _, future in gathering:
                if not future.done():
                    future.set_exception(error)  # type: ignore[arg-type]
            return
        ids, errors = task.result()
        failed = {e.index: e for e in errors}
        written = iter(ids)
        for index, (_, future) in enumerate(gathering):
            error = failed.get(index)
            result = next(written) if error is None else None
            if future.done():
                continue
            if error is not None:
                future.set_exception(item_exception(error))
            else:
                future.set_result(result)  # type: ignore[arg-type]
