"""Admin routes for jobs and backups: listing, triggering, 202/409, backups, scopes."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from s5vec.daemon.services import SERVICES
from s5vec.ops.jobs import JOB_NAMES, JobRun

API = "/api/v1"
READ, WRITE, ADMIN = "read-key-0123456789", "write-key-0123456789", "admin-key-0123456789"
ENV = {"S5VEC_API_KEYS": f"{READ}:read;{WRITE}:write;{ADMIN}:admin"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def fill(client: Any, headers: dict[str, str] | None = None) -> None:
    await client.post(f"{API}/collections", json={"name": "v", "dimension": 3}, headers=headers)
    resp = await client.post(f"{API}/collections/v/vectors/batch", headers=headers, json={"vectors": [
        {"id": str(i), "vector": [1.0, i / 10, 0.5], "metadata": {"i": i}} for i in range(30)]})
    assert resp.status == 200


async def test_jobs_are_listed_with_schedule_counters_and_next_run(client: Any) -> None:
    body = await (await client.get(f"{API}/admin/jobs")).json()
    jobs = {job["name"]: job for job in body["jobs"]}
    assert set(jobs) == set(JOB_NAMES) and body["quiet_hours"] is None and body["quiet_now"] is False
    for job in jobs.values():
        assert {"schedule", "next_run", "last_started", "last_outcome", "runs", "failures", "running"} <= set(job)
    assert jobs["checkpoint"]["next_run"] is not None and jobs["backup"]["next_run"] is None


@pytest.mark.parametrize("name", JOB_NAMES)
async def test_each_job_can_be_triggered_and_reports_its_result(client: Any, name: str) -> None:
    await fill(client)
    resp = await client.post(f"{API}/admin/{name}")
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    expected = {"checkpoint": "lsn", "migrate": "moved", "rebalance": "rebuilt", "compact": "gc",
                "scrub": "checked", "backup": "backup"}[name]
    assert expected in result
    jobs = {job["name"]: job for job in (await (await client.get(f"{API}/admin/jobs")).json())["jobs"]}
    assert jobs[name]["runs"] >= 1 and jobs[name]["last_outcome"] == "success" and jobs[name]["manual"]


async def test_a_job_triggered_without_waiting_answers_202_and_a_second_trigger_409(client: Any) -> None:
    jobs = client.server.app[SERVICES].jobs
    gate = asyncio.Event()
    runs: list[asyncio.Future[Any]] = []

    async def slow(run: JobRun) -> dict[str, Any]:
        runs.append(asyncio.current_task())  # type: ignore[arg-type]
        await gate.wait()
        return {"checked": 0}

    jobs.add(dataclasses.replace(jobs.spec("scrub"), fn=slow))
    resp = await client.post(f"{API}/admin/scrub?wait=false")
    assert resp.status == 202 and (await resp.json())["running"] is True
    resp = await client.post(f"{API}/admin/scrub")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "job_running"
    gate.set()
    async with asyncio.timeout(5):
        await runs[0]  # the job's own task: done once the run is recorded and its lock released
    assert not jobs.status("scrub")["running"]
    assert (await client.post(f"{API}/admin/scrub")).status == 200


async def test_backups_are_listed_verified_and_counted_in_statistics(client: Any) -> None:
    await fill(client)
    created = await (await client.post(f"{API}/admin/backup", json={"label": "nightly"})).json()
    backup_id = created["backup"]["id"]
    assert created["backup"]["label"] == "nightly" and created["bytes"] > 0
    listed = await (await client.get(f"{API}/admin/backups")).json()
    assert listed["count"] == 1 and listed["backups"][0]["id"] == backup_id and listed["backups"][0]["bytes"] > 0
    report = await (await client.post(f"{API}/admin/backups/{backup_id}/verify")).json()
    assert report["ok"] and report["blobs"] >= 3
    assert (await client.post(f"{API}/admin/backups/latest/verify")).status == 200
    resp = await client.post(f"{API}/admin/backups/bnope/verify")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "backup_not_found"
    stats = await (await client.get(f"{API}/admin/statistics")).json()
    assert stats["backups"]["count"] == 1 and stats["backups"]["last"]["id"] == backup_id
    assert set(stats["jobs"]["jobs"]) == set(JOB_NAMES) and stats["jobs"]["corrupt_blobs"] == []
    assert stats["collections"]["v"]["count"] == 30 and "segments" in stats
    resp = await client.post(f"{API}/admin/backup", json={"label": 5})
    assert resp.status == 400


@pytest.mark.parametrize("method,path", [("get", "/admin/jobs"), ("post", "/admin/backup"),
                                         ("post", "/admin/scrub"), ("post", "/admin/compact"),
                                         ("post", "/admin/rebalance"), ("get", "/admin/backups")])
async def test_job_and_backup_routes_need_the_admin_scope(make_client: Any, method: str, path: str) -> None:
    client = await make_client(env=ENV)
    for key, status in ((READ, 403), (WRITE, 403)):
        assert (await getattr(client, method)(API + path, headers=bearer(key))).status == status
    assert (await getattr(client, method)(API + path)).status == 401
    assert (await getattr(client, method)(API + path, headers=bearer(ADMIN))).status == 200


async def test_quiet_hours_come_from_the_config(make_client: Any) -> None:
    client = await make_client(env={"S5VEC_JOBS__QUIET_HOURS": "00:00-24:00"})
    body = await (await client.get(f"{API}/admin/jobs")).json()
    assert body["quiet_hours"] == "00:00-24:00" and body["quiet_now"] is True
    assert (await client.post(f"{API}/admin/migrate")).status == 200  # by hand: runs anyway


async def test_the_openapi_document_lists_the_job_and_backup_routes(client: Any) -> None:
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    for name in JOB_NAMES:
        assert "post" in paths[f"{API}/admin/{name}"]
    assert {f"{API}/admin/jobs", f"{API}/admin/backups", f"{API}/admin/backups/{{id}}/verify"} <= set(paths)
