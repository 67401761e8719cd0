"""Malformed input over the wire: every REST body and WebSocket frame decoder fed garbage,
Hypothesis-generated bad WebSocket frames and NDJSON lines against a running daemon, and
nesting deep enough to overflow a recursive decoder. Each bad input gets an error that
names the problem; the socket stays open; good lines land; stored data stays intact,
also across a restart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given

from s5vec_tools.fuzz import (
    CANARY, COLLECTION, TARGETS, FuzzDaemon, Target, fuzz_settings, intact, prepared_daemon, run_ndjson,
    run_ws,
)

WIRE = {t.name: t for t in TARGETS if t.name.startswith("daemon.")}
API = "/api/v1"
DEEP = b"[" * 5000 + b"1" + b"]" * 5000


@pytest.mark.parametrize("name", sorted(WIRE))
def test_wire_decoder_raises_only_a_400_decode_error_on_garbage(name: str) -> None:
    target: Target = WIRE[name]

    @fuzz_settings(200)
    @given(value=target.inputs)
    def run(value: object) -> None:
        target.check(value)
    run()


@pytest.mark.parametrize("path, body", [
    (f"{API}/collections/v/vectors", b'{"id": "x", "vector": [1, 0], "metadata": {"a": %s}}' % DEEP),
    (f"{API}/collections/v/vectors/batch", b'{"vectors": [%s]}' % DEEP),
    (f"{API}/collections/v/search", b'{"vector": [1, 0], "filter": {"a": %s}}' % DEEP),
    (f"{API}/collections/v/search", b'{"vector": [1, 0], "filter": %s{"a": 1}%s}' % (
        b'{"$or": [' * 200, b"]}" * 200)),
    (f"{API}/collections/v/vectors/delete", b'{"filter": ' + b'{"$not": ' * 100 + b'{"a": 1}' + b"}" * 101),
    (f"{API}/collections", b'{"name": "w", "dimension": 2, "schema": %s}' % DEEP),
    (f"{API}/admin/backup", b'{"label": %s}' % DEEP),
])
async def test_deeply_nested_json_is_a_400_naming_it_and_changes_nothing(make_client: Any, path: str,
                                                                         body: bytes) -> None:
    client = await make_client()
    assert (await client.post(f"{API}/collections", json={"name": "v", "dimension": 2})).status == 201
    assert (await client.post(f"{API}/collections/v/vectors", json={"id": "a", "vector": [1, 0]})).status == 201
    resp = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    reply = await resp.json()
    assert resp.status == 400, reply
    assert reply["error"]["code"] == "invalid_request"
    message = reply["error"]["message"]
    assert "deep" in message or "nest" in message or "Expected" in message, message
    assert (await (await client.get(f"{API}/collections/v")).json())["count"] == 1


async def test_deeply_nested_filter_in_a_query_parameter_is_a_400(make_client: Any) -> None:
    client = await make_client()
    assert (await client.post(f"{API}/collections", json={"name": "v", "dimension": 2})).status == 201
    deep = "[" * 1100 + "1" + "]" * 1100  # past msgspec's limit, within the 8 KiB request line
    resp = await client.get(f"{API}/collections/v/vectors", params={"filter": '{"a": %s}' % deep})
    assert resp.status == 400 and "nest" in (await resp.json())["error"]["message"]


@pytest.fixture(scope="module")
def bad_input_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzDaemon]:
    with prepared_daemon(tmp_path_factory.mktemp("bad-input")) as daemon:
        yield daemon


@pytest.mark.e2e
def test_bad_websocket_frames_each_get_an_error_and_the_socket_stays_open(bad_input_daemon: FuzzDaemon) -> None:
    assert run_ws(bad_input_daemon.url, 120) == 120
    intact(bad_input_daemon)


@pytest.mark.e2e
def test_ndjson_bad_lines_are_reported_by_number_and_good_lines_land(bad_input_daemon: FuzzDaemon) -> None:
    before = bad_input_daemon.call("GET", f"{API}/collections/{COLLECTION}")[1]["count"]
    assert run_ndjson(bad_input_daemon, 25) > 0
    after = bad_input_daemon.call("GET", f"{API}/collections/{COLLECTION}")[1]["count"]
    assert after > before
    intact(bad_input_daemon)


@pytest.mark.e2e
def test_stored_data_survives_the_bad_input_and_a_restart(bad_input_daemon: FuzzDaemon) -> None:
    count = bad_input_daemon.call("GET", f"{API}/collections/{COLLECTION}")[1]["count"]
    bad_input_daemon.stop()
    bad_input_daemon.start()
    bad_input_daemon.wait_status("/ready")
    intact(bad_input_daemon)
    assert bad_input_daemon.call("GET", f"{API}/collections/{COLLECTION}")[1]["count"] == count
    assert bad_input_daemon.call("GET", f"{API}/collections/{CANARY}")[1]["count"] == 1
