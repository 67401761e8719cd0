"""Admin routes (scope ``admin``): jobs, backups and engine statistics, plus the jobs'
lifecycle in ``cleanup_ctx`` (started after the database opens, stopped before it closes).

``POST /api/v1/admin/{job}`` runs a job now and answers 200 with its result, or with
``?wait=false`` 202 and the job's status at once; 409 (``job_running``) while it runs
already (a checkpoint waits instead). Restores are not served here: they need the data
directory to themselves (``s5vec backup restore`` on a stopped daemon).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec
from aiohttp import web
from s5vec.ops.jobs import Jobs

from .errors import RequestInvalid
from .params import flag, reply
from .services import SERVICES
from .wire import JsonDecoder

routes = web.RouteTableDef()  # the admin table (see app.ROUTE_TABLES)


class BackupIn(msgspec.Struct, forbid_unknown_fields=True):
    label: str = ""


_BACKUP: Final = JsonDecoder(BackupIn)


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the scheduled jobs once the database is open; stop them before it closes."""
    services = app[SERVICES]
    config = services.config
    if services.follower is not None:  # decided at start-up by the election: the writer runs the jobs
        yield
        return
    jobs = Jobs(services.db, config.jobs, config.backup, metrics=services.metrics)
    services.jobs_started(jobs)
    await jobs.start()
    yield
    await jobs.stop()


async def run_job(request: web.Request, name: str, **args: Any) -> web.Response:
    jobs = request.app[SERVICES].jobs
    if not flag(request, "wait", True):
        return reply(await jobs.run(name, wait=False, **args), 202)
    return reply(await jobs.run(name, **args))


@routes.get("/api/v1/admin/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    jobs = request.app[SERVICES].jobs
    return reply({"jobs": jobs.overview(), "quiet_hours": str(jobs.quiet) if jobs.quiet else None,
                  "quiet_now": jobs.quiet_now()})


@routes.post(r"/api/v1/admin/{job:checkpoint|migrate|rebalance|compact|scrub}")
async def admin_job(request: web.Request) -> web.Response:
    """Run one scheduled job now (409 if it is running already)."""
    return await run_job(request, request.match_info["job"])


@routes.post("/api/v1/admin/backup")
async def admin_backup(request: web.Request) -> web.Response:
    body = await request.read()
    label = _BACKUP.decode(body).label if body.strip() else ""
    if len(label) > 200:
        raise RequestInvalid("label: at most 200 characters", "label")
    return await run_job(request, "backup", label=label)


@routes.get("/api/v1/admin/backups")
async def list_backups(request: web.Request) -> web.Response:
    catalog = request.app[SERVICES].db.backups
    backups = await catalog.backups()
    return reply({"backups": [{**b.as_dict(), "bytes": await catalog.size_of(b)} for b in backups],
                  "count": len(backups)})


@routes.post("/api/v1/admin/backups/{id}/verify")
async def verify_backup(request: web.Request) -> web.Response:
    catalog = request.app[SERVICES].db.backups
    return reply(await catalog.verify(await catalog.find(request.match_info["id"])))


@routes.get("/api/v1/admin/statistics")
async def admin_statistics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    db = services.db
    backups = await db.backups.backups()
    collections = db.collection_items()
    # statistics and segment reports read live collection state: on a worker, never on the loop
    stats, segments = await asyncio.to_thread(
        lambda: ({n: c.stats() for n, c in collections}, {n: c.segment_report() for n, c in collections}))
    return reply({"collections": stats,
                  "wal_bytes": db.wal_bytes, "applied_lsn": db.applied_lsn,
                  "checkpoint_lsn": db.checkpoint_lsn, "root": str(db.root) if db.root else None,
                  "storage": {**db.storage.as_dict(), "requests": getattr(db.store, "stats", {})},
                  "replication": db.shipping,
                  "segments": segments,
                  "jobs": services.jobs.statistics(),
                  "backups": {"count": len(backups), "last": backups[0].as_dict() if backups else None}})

