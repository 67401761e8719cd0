"""End to end: live feeds of ``s5vec serve`` as a subprocess across restarts."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

from conftest import REPO, Daemon

pytestmark = pytest.mark.e2e
API = "/api/v1"


async def next_event(resp: aiohttp.ClientResponse) -> dict[str, Any] | None:
    """One SSE event from the raw stream as {event, id, data}; None when the stream ended."""
    event: dict[str, Any] = {}
    async with asyncio.timeout(20):
        while True:
            line = (await resp.content.readline()).decode()
            if not line:
                return None
            line = line.rstrip("\n")
            if not line:
                if "event" in event:
                    return event
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value


async def write(session: aiohttp.ClientSession, url: str, *ids: str) -> None:
    for rid in ids:
        async with session.post(f"{url}{API}/collections/feed/vectors", json={"id": rid, "vector": [1, 0, 0]}) as r:
            assert r.status == 201


async def test_sse_resumes_after_a_crash_from_the_last_event_id(daemon: Daemon) -> None:
    daemon.start()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{daemon.url}{API}/collections", json={"name": "feed", "dimension": 3}) as r:
            assert r.status == 201
        async with session.get(f"{daemon.url}{API}/stream/updates") as stream:
            await write(session, daemon.url, "a", "b")
            first = await next_event(stream)
            second = await next_event(stream)
            assert first is not None and second is not None
            assert [first["data"]["record"]["id"], second["data"]["record"]["id"]] == ["a", "b"]
            seen = first["id"]  # the client saw only "a" before it went away
        await write(session, daemon.url, "c")
        daemon.kill()  # SIGKILL: no final checkpoint, the WAL holds everything
        daemon.start()
        async with session.get(f"{daemon.url}{API}/stream/updates", headers={"Last-Event-ID": seen}) as stream:
            events = [await next_event(stream) for _ in range(2)]
            assert [e["data"]["record"]["id"] for e in events if e] == ["b", "c"]
            await write(session, daemon.url, "d")  # and live events follow the replayed ones
            event = await next_event(stream)
            assert event is not None and event["data"]["record"]["id"] == "d"
            assert int(event["id"]) == int(events[-1]["id"]) + 1
    daemon.stop()


async def test_after_a_clean_restart_older_ids_get_an_explicit_missed_event(daemon: Daemon) -> None:
    daemon.start()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{daemon.url}{API}/collections", json={"name": "feed", "dimension": 3}) as r:
            assert r.status == 201
        await write(session, daemon.url, "a", "b", "c")  # LSNs 2, 3, 4
        assert daemon.stop() == 0  # SIGTERM: final checkpoint folds the WAL into a manifest
        daemon.start()
        async with session.get(f"{daemon.url}{API}/stream/updates?since=2") as stream:
            missed = await next_event(stream)
            assert missed is not None and missed["event"] == "missed"
            assert missed["data"] == {"missed": 2, "resume_from": 4, "requested": 2} and missed["id"] == "4"
            await write(session, daemon.url, "d")
            event = await next_event(stream)
            assert event is not None and event["id"] == "5" and event["data"]["record"]["id"] == "d"
    daemon.stop()


async def test_sigterm_closes_websockets_with_going_away_and_ends_sse(daemon: Daemon) -> None:
    daemon.start()
    url = daemon.url.replace("http://", "ws://") + f"{API}/ws"
    async with aiohttp.ClientSession() as session, ws_connect(url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "id": 1}))
        async with asyncio.timeout(10):
            assert json.loads(await ws.recv())["type"] == "subscribed"
        async with session.get(f"{daemon.url}{API}/stream/updates") as stream:
            assert await stream.content.readline()  # the stream is open
            daemon.proc.terminate()  # type: ignore[union-attr]
            event = await next_event(stream)
            assert event is not None and event["event"] == "going_away"
            assert await next_event(stream) is None
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(20):
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert daemon.proc.wait(30) == 0  # type: ignore[union-attr]  # then the daemon exits cleanly


def test_readme_live_feeds_commands_work_against_a_daemon(daemon: Daemon) -> None:
    daemon.start()
    text = (REPO / "docs" / "live-feeds.md").read_text()
    block = re.search(r'```sh title="live-feeds-example"\n(.*?)```', text, re.DOTALL).group(1)  # type: ignore[union-attr]
    ingest, follow = [c.strip() for c in re.split(r"\n(?=curl )", block.split("\n\n", 1)[1]) if c.strip()]
    ingest = "\n".join(line for line in ingest.splitlines() if not line.startswith("#"))
    follow = "\n".join(line for line in follow.splitlines() if not line.startswith("#"))
    subprocess.run(["curl", "-s", "-X", "POST", f"{daemon.url}{API}/collections", "-d",
                    '{"name": "videos", "dimension": 4}'], check=True, capture_output=True, timeout=30)
    result = subprocess.run(["bash", "-c", f"S5={daemon.url}\n{ingest}"], capture_output=True, text=True, timeout=30,
                            check=True)
    report = json.loads(result.stdout)
    assert report["successful"] == 1 and report["failed"] == 1 and report["errors"][0]["line"] == 2
    result = subprocess.run(["bash", "-c", f"S5={daemon.url}\n{follow} --max-time 2"], capture_output=True,
                            text=True, timeout=30, check=False)  # curl exits 28 at --max-time
    assert "event: vector_added\nid: 2\n" in result.stdout and '"id":"clip-1"' in result.stdout
    daemon.stop()
