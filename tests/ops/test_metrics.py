"""Metrics and the health monitor over a real database: names, values after known operations."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from s5vec.index import CollectionConfig, RawItem, prepare_vectors
from s5vec.engine import Database, EngineConfig, Query
from s5vec.ops import HealthMonitor, HealthThresholds, Metrics
from s5vec.storage import BackendUnavailable

DIM = 8
CONFIG = EngineConfig(checkpoint_interval_s=3600, migrate_interval_s=3600)
UNIT_WORDS = ("seconds", "bytes")


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def items(start: int, count: int, timestamp: float | None = None) -> list[RawItem]:
    rng = np.random.default_rng(start)
    return [RawItem(f"r{i}", rng.normal(size=DIM).astype(np.float32), {"i": i}, timestamp)
            for i in range(start, start + count)]


async def test_points_tombstones_and_wal_gauges_follow_writes(tmp_path: Path) -> None:
    metrics = Metrics()
    db = await Database.open(tmp_path, CONFIG, metrics=metrics)
    metrics.attach(db)
    await db.create_collection(CollectionConfig("a", DIM))
    await db.create_collection(CollectionConfig("b", DIM))
    await db.upsert("a", items(0, 25))
    await db.upsert("b", items(0, 4))
    await db.delete("a", ["r1", "r2", "r3"])
    samples = scrape(metrics)
    assert value(samples, "s5vec_points", collection="a", tier="recent") == 22
    assert value(samples, "s5vec_points", collection="b", tier="recent") == 4
    assert value(samples, "s5vec_points", collection="a", tier="historical") == 0
    assert value(samples, "s5vec_tombstones", collection="a", tier="recent") == 3
    assert value(samples, "s5vec_collections") == 2
    assert value(samples, "s5vec_wal_size_bytes") == db.wal_bytes > 0
    assert value(samples, "s5vec_applied_lsn") == db.applied_lsn == 5
    assert value(samples, "s5vec_ready") == 1
    await db.close(checkpoint=False)


async def test_searches_fill_the_recent_and_historical_latency_histograms(tmp_path: Path) -> None:
    metrics = Metrics()
    db = await Database.open(tmp_path, CONFIG, metrics=metrics)
    metrics.attach(db)
    await db.create_collection(CollectionConfig("c", DIM, recent_threshold_s=60))
    await db.upsert("c", items(0, 40, timestamp=1_000.0))  # old: migrates into a segment
    await db.migrate()
    await db.upsert("c", items(100, 10))
    await db.wait_indexed()
    query = prepare_vectors(db.collection("c").config, np.ones((1, DIM), np.float32))[0]
    for _ in range(3):  # plain searches: the batched path
        await db.search("c", query, Query(k=5))
    await db.search("c", query, Query(k=5, filter={"i": {"$gte": 0}}))  # a filtered one: the single path
    await db.search("c", query, Query(k=5, historical=False))
    samples = scrape(metrics)
    assert value(samples, "s5vec_search_duration_seconds_count", tier="recent") == 5
    assert value(samples, "s5vec_search_duration_seconds_count", tier="historical") == 4
    assert value(samples, "s5vec_search_duration_seconds_sum", tier="recent") > 0
    assert value(samples, "s5vec_points", collection="c", tier="historical") == 40
    assert value(samples, "s5vec_segments", collection="c") >= 1
    assert value(samples, "s5vec_migration_last_moved_points") == 40
    assert value(samples, "s5vec_job_runs_total", task="migration", outcome="success") == 1
    await db.close(checkpoint=False)


async def test_checkpoints_are_counted_as_job_runs_and_reset_the_checkpoint_age(tmp_path: Path) -> None:
    metrics = Metrics()
    db = await Database.open(tmp_path, CONFIG, metrics=metrics)
    metrics.attach(db)
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 10))
    await db.wait_indexed()
    await db.checkpoint()
    await db.checkpoint()  # nothing new: skipped
    samples = scrape(metrics)
    assert value(samples, "s5vec_job_runs_total", task="checkpoint", outcome="success") == 1
    assert value(samples, "s5vec_job_runs_total", task="checkpoint", outcome="skipped") == 1
    assert value(samples, "s5vec_job_runs_total", task="checkpoint", outcome="failure") == 0
    assert value(samples, "s5vec_job_duration_seconds_count", task="checkpoint") == 2
    assert value(samples, "s5vec_checkpoint_lsn") == db.applied_lsn
    assert value(samples, "s5vec_checkpoint_age_seconds") < 60
    assert value(samples, "s5vec_job_last_success_timestamp_seconds", task="checkpoint") == pytest.approx(
        time.time(), abs=60)
    await db.close(checkpoint=False)


async def test_job_and_backup_api_records_what_the_jobs_report(tmp_path: Path) -> None:
    metrics = Metrics(process=False)
    metrics.job_finished("backup", "success", 2.5, when=1_700_000_000.0)
    metrics.job_finished("backup", "failure", 0.5)
    metrics.backup_state(3, 1_700_000_000.0, 4096)
    samples = scrape(metrics)
    assert value(samples, "s5vec_job_runs_total", task="backup", outcome="success") == 1
    assert value(samples, "s5vec_job_runs_total", task="backup", outcome="failure") == 1
    assert value(samples, "s5vec_job_duration_seconds_sum", task="backup") == 3.0
    assert value(samples, "s5vec_job_last_success_timestamp_seconds", task="backup") == 1_700_000_000.0
    assert value(samples, "s5vec_backups") == 3
    assert value(samples, "s5vec_backup_last_success_timestamp_seconds") == 1_700_000_000.0
    assert value(samples, "s5vec_backup_last_size_bytes") == 4096
    with pytest.raises(ValueError, match="outcome"):
        metrics.job_finished("backup", "maybe", 1.0)


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.job_finished("backup", "success", 1.0)
    assert value(scrape(first), "s5vec_job_runs_total", task="backup", outcome="success") == 1
    assert ("s5vec_job_runs_total", frozenset({("task", "backup"), ("outcome", "success")})) not in scrape(second)


async def test_exported_names_follow_prometheus_conventions(tmp_path: Path) -> None:
    metrics = Metrics()
    db = await Database.open(tmp_path, CONFIG, metrics=metrics)
    metrics.attach(db, feeds=lambda: {"websocket": 0, "sse": 0}, alerts=lambda: [("memory_high", "warning")])
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 3))
    body, _ = metrics.render()
    families = list(text_string_to_metric_families(body.decode()))
    assert families
    for family in families:
        assert re.fullmatch(r"s5vec_[a-z][a-z0-9_]*", family.name), family.name
        for sample in family.samples:  # Prometheus sets these on every target: it would rename ours exported_*
            assert not {"job", "instance"} & set(sample.labels), (sample.name, sample.labels)
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        else:
            assert not family.name.endswith("_total"), family.name
        for word in UNIT_WORDS:  # a unit is the last word (before _total)
            if word in family.name.split("_"):
                assert family.name.removesuffix("_total").endswith(word), family.name
    promtool_check(body)
    await db.close(checkpoint=False)


def promtool_check(exposition: bytes) -> None:
    """``promtool check metrics`` (Prometheus's own linter) finds nothing to complain about."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make tools` installs Debian's prometheus package")
    lint = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30,
                          check=False)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()


async def test_health_monitor_raises_and_clears_alerts_against_thresholds(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, CONFIG)
    await db.create_collection(CollectionConfig("c", DIM))
    await db.upsert("c", items(0, 20))
    monitor = HealthMonitor(db, HealthThresholds(checkpoint_max_age_s=100, wal_max_bytes=db.wal_bytes // 3,
                                                 memory_max_bytes=1 << 40, storage_max_failures=2))
    report = monitor.report()
    assert report["status"] == "critical"  # the WAL is over twice its threshold
    assert [(a["alert"], a["severity"]) for a in report["alerts"]] == [("wal_too_large", "critical")]
    assert report["checks"]["wal_bytes"] == {"value": db.wal_bytes, "threshold": db.wal_bytes // 3}

    db.last_checkpoint = time.time() - 150  # 1.5x the threshold
    db.storage.record_failure(BackendUnavailable("portal down"))
    alerts = {a.alert: a.severity for a in monitor.check()}
    assert alerts == {"wal_too_large": "critical", "checkpoint_too_old": "warning", "storage_failing": "warning"}
    db.storage.record_failure(BackendUnavailable("portal down"))
    db.storage.record_probe(False, BackendUnavailable("no answer"))
    alerts = {a.alert: a.severity for a in monitor.check()}
    assert alerts["storage_failing"] == "critical" and alerts["storage_unreachable"] == "critical"

    await db.checkpoint()  # a successful checkpoint ends every one of them
    assert monitor.check() == [] and monitor.report()["status"] == "ok"
    await db.close(checkpoint=False)


async def test_memory_alert_uses_the_resident_set_size(tmp_path: Path) -> None:
    db = await Database.open(tmp_path, CONFIG)
    monitor = HealthMonitor(db, HealthThresholds(memory_max_bytes=1 << 20))  # 1 MiB: far below any Python
    (alert,) = monitor.alerts()
    assert alert.alert == "memory_high" and alert.severity == "critical" and alert.value > 1 << 20
    assert HealthMonitor(db).memory_max_bytes > 0  # 0 = 90 % of the memory limit
    await db.close(checkpoint=False)
