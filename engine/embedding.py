"""Text → vectors for collections that declare an ``embedding_model``, off the event loop.

The encoder (index/embed.py) is CPU work: it runs on its own thread, with numpy's BLAS held
to one thread meanwhile (threadpoolctl, part of the ``embed`` extra): the matrices of a few
texts are too small for threads to pay off, and on a busy 2-core host a second BLAS thread
made embedding 2-5x slower. Requests for one model that arrive while a batch is being
embedded wait and go together as the next batch, so concurrent searches by text share the
work; a long request is embedded in chunks, so queries slip in between its chunks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import numpy as np
from s5vec.index import CollectionConfig, RawItem
from s5vec.index.embed import FIELD, TextEncoder
from s5vec.index.errors import EmbeddingError

log = logging.getLogger(__name__)
CHUNK: Final = 256  # texts of one request per batch
BLAS_THREADS: Final = 1


_controller: list[Any] = []  # threadpoolctl's controller, made on first use (None without it)


def _encode(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    """Worker thread: embed with BLAS limited to ``BLAS_THREADS`` (as is without threadpoolctl)."""
    if not _controller:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller.append(None)
        else:
            _controller.append(ThreadpoolController())
    if _controller[0] is None:
        return encoder.encode(texts)
    with _controller[0].limit(limits=BLAS_THREADS, user_api="blas"):
        return encoder.encode(texts)


class Embedder:
    """Embeds texts with collections' models; models load once, on first use."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="s5vec-embed")
        self._waiting: dict[str, list[tuple[list[str], asyncio.Future[np.ndarray]]]] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loaded: dict[str, TextEncoder] = {}

    async def encoder(self, model: str) -> TextEncoder:
        """The loaded model (EmbeddingError, field ``embedding_model``, when it does not load)."""
        encoder = self._loaded.get(model)
        if encoder is None:
            encoder = await asyncio.get_running_loop().run_in_executor(self._pool, TextEncoder.load, model)
            self._loaded[model] = encoder
        return encoder

    async def check(self, config: CollectionConfig) -> None:
        """Load ``config``'s model and check that it makes vectors of the collection's
        dimension. Raises EmbeddingError (422) naming ``embedding_model``."""
        if config.embedding_model is not None:
            self._fits(config, await self.encoder(config.embedding_model))

    @staticmethod
    def _fits(config: CollectionConfig, encoder: TextEncoder) -> None:
        if encoder.dimension != config.dimension:
            raise EmbeddingError(FIELD, f"model {config.embedding_model!r} makes {encoder.dimension}-dimensional "
                                        f"vectors; collection {config.name!r} has dimension {config.dimension}")

    async def encode(self, config: CollectionConfig, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dimension)`` float32 unit rows by ``config``'s model. Raises
        EmbeddingError (field ``text``) when the collection has no model."""
        model = config.embedding_model
        if model is None:
            raise EmbeddingError("text", f"collection {config.name!r} has no embedding_model; send 'vector', "
                                         "or create the collection with an embedding_model")
        self._fits(config, await self.encoder(model))
        if len(texts) <= CHUNK:
            return await self._enqueue(model, list(texts))
        parts = [await self._enqueue(model, list(texts[i:i + CHUNK])) for i in range(0, len(texts), CHUNK)]
        return np.concatenate(parts)

    async def embed_items(self, config: CollectionConfig, items: Sequence[RawItem]) -> list[RawItem]:
        """``items`` with each text-only item's ``text`` replaced by its vector; the others
        unchanged (validation reports what is wrong with them). Nothing to embed on a
        collection without a model: validation then names ``text`` on those items."""
        todo = [n for n, item in enumerate(items) if isinstance(item.text, str) and item.vector is None]
        out = list(items)
        if not todo or config.embedding_model is None:
            return out
        rows = await self.encode(config, [str(items[n].text) for n in todo])
        for row, n in zip(rows, todo):
            out[n] = dataclasses.replace(items[n], vector=row, text=None)
        return out

    async def _enqueue(self, model: str, texts: list[str]) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(model, []).append((texts, future))
        if model not in self._running:
            self._running[model] = asyncio.create_task(self._drain(model), name=f"s5vec-embed-{model}")
        return await future

    async def _drain(self, model: str) -> None:
        """Embed what waits for ``model``, one batch at a time, until nothing waits."""
        waiting: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
        try:
            while True:
                waiting = [w for w in self._waiting.pop(model, []) if not w[1].done()]
                if not waiting:
                    return
                texts = [text for request, _ in waiting for text in request]
                try:
                    encoder = await self.encoder(model)
                    rows = await asyncio.get_running_loop().run_in_executor(self._pool, _encode, encoder, texts)
                except Exception as exc:  # noqa: BLE001 - every waiter gets the error
                    for _, future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for request, future in waiting:
                    if not future.done():
                        future.set_result(rows[start:start + len(request)])
                    start += len(request)
        except asyncio.CancelledError:
            for _, future in waiting + self._waiting.pop(model, []):
                future.cancel()
            raise
        finally:
            self._running.pop(model, None)

    async def close(self) -> None:
        """Cancel queued work and stop the thread (a running batch finishes on its own)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
