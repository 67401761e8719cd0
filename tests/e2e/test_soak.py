"""The soak harness: a short real run (every process works, no errors, events delivered)
and its verdict logic on synthetic series (a short run cannot judge a memory trend)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from s5vec_tools import soak

MIB = 1 << 20


def series(rss_mib: list[float], ops: list[int] | None = None, errors: list[int] | None = None) -> list[dict]:
    n = len(rss_mib)
    return [{"rss_bytes": r * MIB, "ops": (ops or [100] * n)[i], "errors": (errors or [0] * n)[i]}
            for i, r in enumerate(rss_mib)]


def test_flat_memory_after_a_growing_warm_up_passes() -> None:
    rss = [100, 150, 190, 200, 201] + [200 + (i % 3) for i in range(40)]
    verdict = soak.checks(series(rss), 0.1, 600)
    assert verdict["memory"]["ok"] and verdict["memory"]["enforced"]
    assert abs(verdict["memory"]["growth"]) < 0.01


def test_a_steady_leak_fails_the_memory_check() -> None:
    rss = [200 + i * 1.0 for i in range(60)]  # +1 MiB per sample: some +20 % after warm-up
    verdict = soak.checks(series(rss), 0.25, 600)
    assert not verdict["memory"]["ok"] and verdict["memory"]["growth"] > 0.05


def test_a_compaction_saw_tooth_is_not_a_trend() -> None:
    tooth = [200, 230, 260, 290, 320, 200]
    verdict = soak.checks(series(tooth * 12), 0.25, 600)
    assert verdict["memory"]["ok"], verdict["memory"]


def test_one_low_sample_does_not_decide_the_memory_check() -> None:
    tooth = [240, 260, 280, 300, 320]
    flat = tooth * 24
    dipped_early = list(flat)
    dipped_early[40] = 160  # one sample between a compaction's free and its refill
    verdict = soak.checks(series(dipped_early), 0.25, 600)
    assert verdict["memory"]["ok"], verdict["memory"]
    assert verdict["memory"]["min_growth"] > 0.4  # what the minimum would have called growth
    leak = [v + i * 0.5 for i, v in enumerate(flat)]  # troughs rise ~20 % after warm-up
    leak[-10] = 150  # and a dip near the end does not hide it
    verdict = soak.checks(series(leak), 0.25, 600)
    assert not verdict["memory"]["ok"] and verdict["memory"]["growth"] > 0.1


def test_too_few_samples_or_a_short_run_cannot_judge_memory() -> None:
    assert soak.memory_growth([100, 101, 102], 0.25)["growth"] is None
    assert not soak.checks(series([200] * 12), 0.25, 60)["memory"]["enforced"]


def test_a_creeping_error_rate_fails_and_a_steady_one_passes() -> None:
    rising = soak.checks(series([200] * 30, errors=[0] * 10 + [0] * 10 + [5] * 10), 0.25, 600)
    assert not rising["error_rate"]["ok"] and rising["error_rate"]["last_third"] > 0.04
    steady = soak.checks(series([200] * 30, errors=[1] * 30, ops=[1000] * 30), 0.25, 600)
    assert steady["error_rate"]["ok"]
    assert soak.error_rates([0, 0, 0], [0, 0, 0]) == (0.0, 0.0)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_short_soak_runs_every_process_without_errors_and_delivers_events(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    code = soak.main(["--minutes", "0.6", "--out", str(out), "--writers", "1", "--readers", "1",
                      "--subscribers", "1", "--sse", "1", "--ids", "1000"])
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert code == 0 and report["ok"], json.dumps({k: v for k, v in report.items() if k != "series"})[:3000]
    assert report["name"] == "soak" and report["command"].startswith("python -m s5vec_tools.soak")
    assert summary["errors"] == 0 and summary["requests"] > 0
    assert summary["workers_finished"] == summary["workers_with_traffic"] == 4
    assert {"upsert", "upsert_batch", "delete", "search", "search_filtered", "get", "subscribe",
            "subscribe_query", "sse_connect"} <= summary["by_op"].keys()
    assert summary["events_delivered"]["ws_events"] > 0 and summary["events_delivered"]["sse_events"] > 0
    assert len(report["series"]) >= 5 and all(s["rss_bytes"] for s in report["series"])
    assert summary["memory_check"].startswith("not enforced")
