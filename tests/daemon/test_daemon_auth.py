"""API keys and scopes: read < write < admin; 401 without a known key, 403 without the scope."""

from __future__ import annotations

from typing import Any

import pytest

READ, WRITE, ADMIN = "read-key-0123456789", "write-key-0123456789", "admin-key-0123456789"
ENV = {"S5VEC_API_KEYS": f"{READ}:read;{WRITE}:write;{ADMIN}:admin"}
API = "/api/v1"


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture
async def secured(make_client: Any) -> Any:
    client = await make_client(env=ENV)
    resp = await client.post(f"{API}/collections", json={"name": "v", "dimension": 2}, headers=bearer(ADMIN))
    assert resp.status == 201
    return client


ROUTES = [
    ("get", f"{API}/collections", None, "read"),
    ("post", f"{API}/collections/v/search", {"vector": [1, 0]}, "read"),
    ("post", f"{API}/search", {"vector": [1, 0]}, "read"),
    ("get", f"{API}/collections/v", None, "read"),
    ("post", f"{API}/collections/v/vectors", {"id": "a", "vector": [1, 0]}, "write"),
    ("post", f"{API}/collections/v/vectors/batch", {"vectors": [{"id": "b", "vector": [0, 1]}]}, "write"),
    ("post", f"{API}/vectors", {"id": "a", "vector": [1, 0]}, "write"),
    ("post", f"{API}/collections", {"name": "w", "dimension": 2}, "write"),
    ("post", f"{API}/admin/checkpoint", None, "admin"),
    ("get", f"{API}/admin/statistics", None, "admin"),
]
RANK = {"read": 1, "write": 2, "admin": 3}


@pytest.mark.parametrize("method,path,body,needed", ROUTES)
@pytest.mark.parametrize("key,rank", [(None, 0), ("wrong-key-0123456789", 0), (READ, 1), (WRITE, 2), (ADMIN, 3)])
async def test_auth_matrix(secured: Any, method: str, path: str, body: Any, needed: str,
                           key: str | None, rank: int) -> None:
    resp = await getattr(secured, method)(path, json=body, headers=bearer(key))
    if rank == 0:
        expected = 401
    elif rank < RANK[needed]:
        expected = 403
    else:
        expected = 200 if method == "get" or needed != "write" or path.endswith("batch") else 201
        assert resp.status in (200, 201), await resp.text()
        return
    assert resp.status == expected, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == ("unauthorized" if expected == 401 else "forbidden")
    assert (key or "") not in error["message"] or not key


async def test_health_ready_and_openapi_stay_public(secured: Any) -> None:
    for path in ("/health", "/ready", "/openapi.json"):
        assert (await secured.get(path)).status == 200


async def test_rejected_write_changes_nothing(secured: Any) -> None:
    resp = await secured.post(f"{API}/collections/v/vectors", json={"id": "x", "vector": [1, 0]},
                              headers=bearer(READ))
    assert resp.status == 403
    info = await (await secured.get(f"{API}/collections/v", headers=bearer(READ))).json()
    assert info["count"] == 0


async def test_malformed_authorization_header_is_401(secured: Any) -> None:
    for header in ("Basic abc", "Bearer", READ):
        resp = await secured.get(f"{API}/collections", headers={"Authorization": header})
        assert resp.status == 401
