"""The [replication] section and WAL shipping through the daemon (in process, portal double)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from s5vec.daemon.config import ConfigError, load_config
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
