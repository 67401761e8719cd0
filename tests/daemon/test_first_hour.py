"""What a new user meets in the first hour: the command's version and help, answers that end
their line, a quiet default log."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

from s5vec.daemon import logs


def s5vec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_version_flag_prints_the_installed_version() -> None:
    from importlib.metadata import version
    result = s5vec("--version")
    assert result.returncode == 0 and result.stdout == f"s5vec {version('s5vec')}\n"
    assert s5vec("version").stdout == result.stdout


def test_help_shows_the_options_the_client_commands_share() -> None:
    out = s5vec("--help").stdout
    for option in ("--url URL", "--api-key KEY", "--json", "--timeout S", "--version"):
        assert option in out, option


async def test_json_answers_and_errors_end_with_a_newline(client: Any) -> None:
    ok = await client.get("/api/v1/collections")
    assert ok.status == 200 and (await ok.read()).endswith(b"}\n")
    missing = await client.get("/api/v1/collections/nope")
    assert missing.status == 404 and (await missing.read()).endswith(b"}\n")


def test_scheduler_bookkeeping_stays_out_of_the_info_log() -> None:
    handler = logs.configure("info")
    try:
        assert not logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.INFO)
        assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.WARNING)
        assert logging.getLogger("s5vec").isEnabledFor(logging.INFO)
        logs.set_level("debug")
        assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger().removeHandler(handler)
        logs.set_level("warning")


async def test_a_conflicting_create_names_the_settings_that_differ(client: Any) -> None:
    assert (await client.post("/api/v1/collections", json={"name": "v", "dimension": 4})).status == 201
    same = await client.post("/api/v1/collections", json={"name": "v", "dimension": 4})
    assert same.status == 200
    clash = await client.post("/api/v1/collections", json={"name": "v", "dimension": 8, "hnsw": {"m": 32}})
    error = (await clash.json())["error"]
    assert clash.status == 409 and error["code"] == "collection_exists" and error["field"] == "dimension"
    assert "dimension is 4, not 8" in error["message"] and "hnsw.m is 16, not 32" in error["message"]


async def test_an_unknown_websocket_type_lists_the_valid_ones(client: Any) -> None:
    async with client.ws_connect("/api/v1/ws") as ws:
        await ws.send_json({"type": "serch", "id": 1})
        reply = await ws.receive_json()
        assert reply["id"] == 1 and reply["error"]["field"] == "type"
        assert reply["error"]["message"].startswith("unknown type 'serch'; valid types: auth, ping, upsert,")
        assert "subscribe_query" in reply["error"]["message"]
        await ws.send_json({"id": 2})
        reply = await ws.receive_json()
        assert "missing required field 'type'; valid types:" in reply["error"]["message"]


async def test_tune_on_too_few_records_claims_nothing(client: Any) -> None:
    assert (await client.post("/api/v1/collections", json={"name": "tiny", "dimension": 2})).status == 201
    await client.post("/api/v1/collections/tiny/vectors", json={"id": "a", "vector": [1, 0]})
    answer = await (await client.post("/api/v1/collections/tiny/tune", json={"target_recall": 0.99})).json()
    assert answer["met"] is None and "too few records" in answer["note"]
