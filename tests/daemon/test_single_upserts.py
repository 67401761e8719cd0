"""Concurrent single-record REST upserts are gathered into shared engine batches, and each
request still gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

API = "/api/v1"


async def test_concurrent_single_upserts_share_batches_and_keep_their_own_errors(client: Any) -> None:
    resp = await client.post(f"{API}/collections", json={"name": "v", "dimension": 3})
    assert resp.status == 201
    before = (await (await client.get("/health")).json())["applied_lsn"]

    async def put(i: int) -> Any:
        vector = [float(i + 1), 1.0, 0.0] if i != 7 else [1.0, 2.0]  # record 7 has the wrong dimension
        return await client.post(f"{API}/collections/v/vectors", json={"id": f"r{i}", "vector": vector,
                                                                       "metadata": {"i": i}})

    responses = await asyncio.gather(*(put(i) for i in range(40)))
    statuses = [r.status for r in responses]
    assert statuses.count(201) == 39 and statuses[7] == 422
    assert "dimension" in (await responses[7].json())["error"]["message"]
    assert [(await r.json())["id"] for i, r in enumerate(responses) if i != 7] == [f"r{i}" for i in range(40) if i != 7]
    after = (await (await client.get("/health")).json())["applied_lsn"]
    assert after - before < 39  # fewer WAL records than requests: requests were gathered
    for i in (0, 13, 39):
        record = await (await client.get(f"{API}/collections/v/vectors/r{i}")).json()
        assert record["metadata"] == {"i": i}
    assert (await (await client.get(f"{API}/collections/v")).json())["count"] == 39
    missing = await client.post(f"{API}/collections/nope/vectors", json={"id": "a", "vector": [1, 0, 0]})
    assert missing.status == 404
