"""The [replication] section and WAL shipping through the daemon (in process, portal double)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from s5vec.daemon.config import ConfigError, load_config
from s5vec.daemon.leadership import RESTART
from s5vec.storage.s5 import generate_phrase
from s5vec.testing.portal import FAULTS, create_test_portal

PHRASE = generate_phrase()


@pytest.mark.parametrize("env,key", [
    ({"S5VEC_REPLICATION__DURABILITY": "eventual"}, "replication.durability"),
    ({"S5VEC_REPLICATION__SHIP_INTERVAL_MS": "0"}, "replication.ship_interval_ms"),
    ({"S5VEC_REPLICATION__SHIP_INTERVAL_MS": "soon"}, "replication.ship_interval_ms"),
    ({"S5VEC_REPLICATION__ACK_TIMEOUT_S": "-1"}, "replication.ack_timeout_s"),
    ({"S5VEC_REPLICATION__DURABILITY": "replicated"}, "replication.durability"),  # local storage, no shipping
    ({"S5VEC_REPLICATION__DURABILITY": "replicated", "S5VEC_REPLICATION__SHIP_WAL": "false",
      "S5_MODE": "portal", "S5_PORTAL_URL": "https://s5.example.com", "S5_SEED_PHRASE": PHRASE},
     "replication.durability"),
])
def test_invalid_replication_settings_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(env=env)


def test_shipping_is_on_with_remote_storage_and_off_locally_unless_set() -> None:
    portal = {"S5_MODE": "portal", "S5_PORTAL_URL": "https://s5.example.com", "S5_SEED_PHRASE": PHRASE}
    assert load_config(env=portal).ships_wal
    assert not load_config(env={}).ships_wal
    assert load_config(env={"S5VEC_REPLICATION__SHIP_WAL": "true"}).ships_wal
    assert not load_config(env={**portal, "S5VEC_REPLICATION__SHIP_WAL": "false"}).ships_wal


@pytest.fixture
async def portal(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(create_test_portal())
    return server


async def test_a_replicated_write_is_on_a_fresh_node_with_the_same_phrase_before_any_checkpoint(
        make_client: Any, portal: TestServer, tmp_path: Path) -> None:
    env = {"S5_MODE": "portal", "S5_PORTAL_URL": str(portal.make_url("/")), "S5_SEED_PHRASE": PHRASE,
           "S5VEC_STORAGE__RETRIES": "0", "S5VEC_REPLICATION__DURABILITY": "replicated",
           "S5VEC_REPLICATION__SHIP_INTERVAL_MS": "60000"}
    writer = await make_client(env, tmp_path / "a")
    assert (await writer.post("/api/v1/collections", json={"name": "c", "dimension": 2})).status in (200, 201)
    portal.app[FAULTS].latency = 0.02
    resp = await writer.post("/api/v1/collections/c/vectors", json={"id": "a", "vector": [1.0, 0.0]})
    assert resp.status == 201
    portal.app[FAULTS].latency = 0.0
    health = await (await writer.get("/health")).json()
    assert health["replication"]["durability"] == "replicated"
    assert health["replication"]["shipped_lsn"] == health["applied_lsn"] == 2
    assert health["checkpoint_lsn"] == 0
    metrics = await (await writer.get("/metrics")).text()
    assert "s5vec_wal_shipped_lsn 2.0" in metrics and "s5vec_wal_shipped_chunks_total" in metrics

    fresh = await make_client(env, tmp_path / "b")
    resp = await fresh.get("/api/v1/collections/c/vectors/a")
    assert resp.status == 200 and (await resp.json())["vector"] == [1.0, 0.0]


def follower_env(portal: TestServer, **extra: str) -> dict[str, str]:
    return {"S5_MODE": "portal", "S5_PORTAL_URL": str(portal.make_url("/")), "S5_SEED_PHRASE": PHRASE,
            "S5VEC_STORAGE__RETRIES": "0", "S5VEC_REPLICATION__ROLE": "follower",
            "S5VEC_REPLICATION__POLL_INTERVAL_MS": "20", "S5VEC_REPLICATION__WRITER_URL": "http://writer:7533",
            "S5VEC_REPLICATION__MIN_LSN_TIMEOUT_S": "0.3", **extra}


def test_a_follower_needs_remote_storage() -> None:
    with pytest.raises(ConfigError, match="replication.role"):
        load_config(env={"S5VEC_REPLICATION__ROLE": "follower"})
    with pytest.raises(ConfigError, match="replication.role"):
        load_config(env={"S5VEC_REPLICATION__ROLE": "leader"})


async def test_a_follower_serves_the_writers_data_refuses_writes_and_waits_for_min_lsn(
        make_client: Any, portal: TestServer, tmp_path: Path) -> None:
    env = {"S5_MODE": "portal", "S5_PORTAL_URL": str(portal.make_url("/")), "S5_SEED_PHRASE": PHRASE,
           "S5VEC_STORAGE__RETRIES": "0", "S5VEC_REPLICATION__SHIP_INTERVAL_MS": "20"}
    writer = await make_client(env, tmp_path / "w")
    await writer.post("/api/v1/collections", json={"name": "c", "dimension": 2})
    resp = await writer.post("/api/v1/collections/c/vectors", json={"id": "a", "vector": [1.0, 0.0]})
    assert resp.status == 201 and int(resp.headers["S5vec-LSN"]) == 2
    role = await (await writer.get("/api/v1/replication/role")).json()
    assert role["role"] == "writer" and role["applied_lsn"] == 2

    follower = await make_client(follower_env(portal), tmp_path / "f")
    role = await (await follower.get("/api/v1/replication/role")).json()
    assert role["role"] == "follower" and role["writer_url"] == "http://writer:7533"
    ready = await follower.get("/ready")
    assert ready.status == 200 and (await ready.json())["lag_lsn"] == 0
    resp = await follower.get("/api/v1/collections/c/vectors/a?min_lsn=2")
    assert resp.status == 200 and (await resp.json())["vector"] == [1.0, 0.0]
    hits = await (await follower.post("/api/v1/collections/c/search", json={"vector": [1.0, 0.0], "k": 1})).json()
    assert [h["id"] for h in hits["results"]] == ["a"]

    for method, path, body in (("POST", "/api/v1/collections/c/vectors", {"id": "b", "vector": [0.0, 1.0]}),
                               ("POST", "/api/v1/collections", {"name": "d", "dimension": 2}),
                               ("DELETE", "/api/v1/collections/c/vectors/a", None),
                               ("POST", "/api/v1/admin/checkpoint", None)):
        resp = await follower.request(method, path, json=body)
        assert resp.status == 403, (method, path)
        error = (await resp.json())["error"]
        assert error["code"] == "read_only_replica" and "http://writer:7533" in error["message"]
        assert resp.headers["S5vec-Writer"] == "http://writer:7533"

    resp = await writer.post("/api/v1/collections/c/vectors", json={"id": "b", "vector": [0.0, 1.0]})
    lsn = int(resp.headers["S5vec-LSN"])
    resp = await follower.get(f"/api/v1/collections/c/vectors/b?min_lsn={lsn}")  # waits for the shipped chunk
    assert resp.status == 200 and (await resp.json())["id"] == "b"
    resp = await follower.get(f"/api/v1/collections/c/vectors/b?min_lsn={lsn + 100}")
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "replica_lagging"
    resp = await follower.get("/api/v1/collections/c/vectors/b?min_lsn=-3")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "min_lsn"
    metrics = await (await follower.get("/metrics")).text()
    assert 's5vec_replication_role{role="follower"} 1.0' in metrics and "s5vec_replication_lag_seconds" in metrics


async def test_a_follower_is_not_ready_while_it_lags_more_than_max_lag(
        make_client: Any, portal: TestServer, tmp_path: Path) -> None:
    env = {"S5_MODE": "portal", "S5_PORTAL_URL": str(portal.make_url("/")), "S5_SEED_PHRASE": PHRASE,
           "S5VEC_STORAGE__RETRIES": "0", "S5VEC_REPLICATION__SHIP_INTERVAL_MS": "20"}
    writer = await make_client(env, tmp_path / "w")
    await writer.post("/api/v1/collections", json={"name": "c", "dimension": 2})
    follower = await make_client(follower_env(portal, S5VEC_REPLICATION__MAX_LAG_S="0.2"), tmp_path / "f")
    assert (await follower.get("/ready")).status == 200
    portal.app[FAULTS].fail_next = 10_000  # the follower cannot read the head any more
    async with asyncio.timeout(5):
        while (await follower.get("/ready")).status == 200:
            await asyncio.sleep(0.05)
    body = await (await follower.get("/ready")).json()
    assert body["ready"] is False and body["lag_seconds"] > 0.2
    portal.app[FAULTS].fail_next = 0
    async with asyncio.timeout(5):
        while (await follower.get("/ready")).status != 200:
            await asyncio.sleep(0.05)


async def test_promote_needs_force_without_etcd_and_then_asks_to_run_again_as_the_writer(
        make_client: Any, portal: TestServer, tmp_path: Path) -> None:
    env = {"S5_MODE": "portal", "S5_PORTAL_URL": str(portal.make_url("/")), "S5_SEED_PHRASE": PHRASE,
           "S5VEC_STORAGE__RETRIES": "0", "S5VEC_REPLICATION__SHIP_INTERVAL_MS": "20"}
    writer = await make_client(env, tmp_path / "w")
    await writer.post("/api/v1/collections", json={"name": "c", "dimension": 2})
    resp = await writer.post("/api/v1/admin/promote")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "already_writer"
    follower = await make_client(follower_env(portal), tmp_path / "f")
    resp = await follower.post("/api/v1/admin/promote")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "force_required"
    assert follower.app[RESTART].env is None
    resp = await follower.post("/api/v1/admin/promote?force=true")
    assert resp.status == 202 and (await resp.json())["epoch"] == 1
    assert follower.app[RESTART].env == {"S5VEC_REPLICATION__ROLE": "writer", "S5VEC_REPLICATION__EPOCH": "1",
                                         "S5VEC_REPLICATION__LEASE_ID": ""}


@pytest.mark.parametrize("env,key", [
    ({"S5VEC_REPLICATION__AUTO_FAILOVER": "true"}, "replication.auto_failover"),
    ({"S5VEC_REPLICATION__LEASE_TTL_S": "1"}, "replication.lease_ttl_s"),
    ({"S5VEC_REPLICATION__ETCD_ENDPOINTS": "127.0.0.1:2379"}, "replication.etcd_endpoints"),
])
def test_invalid_leader_election_settings_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(env=env)


async def test_a_request_may_ask_for_replicated_or_local_durability(
        make_client: Any, portal: TestServer, tmp_path: Path) -> None:
    env = {"S5_MODE": "portal", "S5_PORTAL_URL": str(portal.make_url("/")), "S5_SEED_PHRASE": PHRASE,
           "S5VEC_STORAGE__RETRIES": "0", "S5VEC_REPLICATION__SHIP_INTERVAL_MS": "60000"}
    writer = await make_client(env, tmp_path / "w")
    await writer.post("/api/v1/collections", json={"name": "c", "dimension": 2})
    resp = await writer.post("/api/v1/collections/c/vectors", json={"id": "a", "vector": [1.0, 0.0]})
    assert resp.status == 201  # local (the daemon's default): not shipped for a minute
    health = await (await writer.get("/health")).json()
    assert health["replication"]["shipped_lsn"] < health["applied_lsn"]
    for path, body in (("/api/v1/collections/c/vectors?durability=replicated", {"id": "b", "vector": [0.0, 1.0]}),
                       ("/api/v1/collections/c/vectors/batch?durability=replicated",
                        {"vectors": [{"id": "c", "vector": [1.0, 1.0]}]})):
        resp = await writer.post(path, json=body)
        assert resp.status in (200, 201), await resp.text()
        health = await (await writer.get("/health")).json()
        assert health["replication"]["shipped_lsn"] == health["applied_lsn"]  # on the portal when acknowledged
    resp = await writer.post("/api/v1/collections/c/vectors?durability=eventually", json={"id": "d", "vector": [1, 0]})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "durability"


async def test_replicated_durability_per_request_needs_shipping(make_client: Any, tmp_path: Path) -> None:
    client = await make_client({}, tmp_path / "local")
    await client.post("/api/v1/collections", json={"name": "c", "dimension": 2})
    resp = await client.post("/api/v1/collections/c/vectors?durability=replicated", json={"id": "a", "vector": [1, 0]})
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "durability"
    resp = await client.post("/api/v1/collections/c/vectors?durability=local", json={"id": "a", "vector": [1, 0]})
    assert resp.status == 201
