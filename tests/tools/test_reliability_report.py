"""RELIABILITY.md is rendered from whatever the run reports hold; missing runs say so."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from s5vec_tools import reliability

MACHINE = {"cpu_model": "Test CPU 9000", "cpu_count": 2, "cpu_usable": 2, "mem_total_bytes": 8 << 30,
           "platform": "Linux-test", "python": "3.11.7"}
NOW = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
CRASH = {"name": "crash-loop", "command": "python -m s5vec_tools.crashloop --kills 50", "started": "2026-11-25T15:00:00",
         "seconds": 612.5, "ok": True,
         "summary": {"kills": 50, "kills_per_phase": {"ingest": 20, "checkpoint": 15, "migration": 15},
                     "acknowledged_writes": 123456, "lost": 0, "min_recall": 0.97,
                     "restart_s": {"p50": 1.2, "max": 3.4}},
         "violations": []}
FUZZ = {"name": "fuzz", "command": "python -m s5vec_tools.fuzz", "started": "2026-11-25T15:10:00", "seconds": 300,
        "ok": False,
        "summary": {"decoder_inputs": {"cbor": 10000, "wal": 5000}, "http_calls": 2000, "ws_frames": 1500,
                    "ndjson_lines": 800, "failures": 1, "notes": ["storage/wal.py: " + "x" * 200, "daemon/errors.py: y"],
                    "found_and_fixed": [{"what": "WAL decoder crashed on a short header", "commit": "abc123"}]},
        "failures": ["POST /api/v1/x: 500"]}


def write(directory: Path, name: str, report: dict) -> None:
    (directory / name).write_text(json.dumps(report))


def test_report_renders_each_run_generically_and_lists_missing_ones(tmp_path: Path) -> None:
    write(tmp_path, "crashloop.json", CRASH)
    write(tmp_path, "fuzz.json", FUZZ)
    text = reliability.render(reliability.load_reports(tmp_path), "fixtures", MACHINE, "abc123def456", NOW)
    assert text.startswith("# Reliability\n")
    assert "| CPU | Test CPU 9000, 2 cores |" in text and "| RAM | 8.0 GiB |" in text
    assert "| Git commit | abc123def456 |" in text and "2026-11-25 16:00 UTC" in text
    overview = text.split("## Overview", 1)[1].split("\n## ", 1)[0]
    assert "| Crash loop | ok | 10.2 min (612 s) | kills 50;" in overview
    assert "| Fault injection | not run | — | — |" in overview and "| Soak | not run |" in overview
    assert "| Fuzzing | **FAILED** |" in overview and "decoder inputs 15,000" in overview
    crash = text.split("## Crash loop", 1)[1].split("\n## ", 1)[0]
    assert "`python -m s5vec_tools.crashloop --kills 50`" in crash
    assert "| kills | 50 |" in crash and "| acknowledged_writes | 123,456 |" in crash
    assert "#### kills_per_phase" in crash and "| ingest | 20 |" in crash  # a nested dict: a sub-table
    assert "### Violations\n\nnone" in crash
    fuzz = text.split("## Fuzzing", 1)[1].split("\n## ", 1)[0]
    assert "| WAL decoder crashed on a short header | abc123 |" in fuzz  # a list of objects: a table
    assert "- POST /api/v1/x: 500" in fuzz
    assert "#### notes\n\n- storage/wal.py: xxx" in fuzz and "- daemon/errors.py: y" in fuzz  # long texts: a list
    assert "Not run: no `faults.json`" in text and "Not run: no `soak.json`" in text


def test_soak_series_become_a_bounded_table(tmp_path: Path) -> None:
    series = [{"t": i * 5.0, "ops_per_s": 100.0 + i, "p99_ms": 12.5, "errors": 0, "rss_bytes": 200 << 20,
               "by_op": {"search": 3}} for i in range(120)]
    write(tmp_path, "soak.json", {"name": "soak", "command": "python -m s5vec_tools.soak --minutes 10",
                                  "started": "x", "seconds": 640, "ok": True,
                                  "summary": {"requests": 60000, "errors": 0, "memory_growth_pct": 1.5},
                                  "series": series})
    text = reliability.render(reliability.load_reports(tmp_path), "d", MACHINE, "c", NOW)
    table = text.split("### Series", 1)[1]
    assert table.count("\n| ") == reliability.MAX_ROWS + 1  # header + evenly spaced rows
    assert "(40 of 120 rows, evenly spaced)" in table and "by_op" not in table
    assert "| 200.0 MiB |" in table  # byte counts read as MiB
    assert "requests 60,000; errors 0; memory growth pct 1.5" in text


def test_cli_writes_the_file_and_refuses_broken_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "crashloop.json", CRASH)
    out = tmp_path / "RELIABILITY.md"
    assert reliability.main(["--dir", str(tmp_path), "--write", str(out)]) == 0
    assert "## Crash loop" in out.read_text() and f"1 of {len(reliability.RUNS)} reports" in capsys.readouterr().err
    write(tmp_path, "soak-20min.json", {"name": "soak", "command": "python -m s5vec_tools.soak --minutes 20",
                                        "seconds": 1300, "ok": False, "summary": {"memory_growth_pct": 15.7}})
    text = reliability.render(reliability.load_reports(tmp_path), "d", MACHINE, "c", NOW)
    assert "| soak (soak-20min.json) | **FAILED** | 21.7 min (1300 s) | memory growth pct 15.7 |" in text
    assert "## soak (soak-20min.json)" in text and "`python -m s5vec_tools.soak --minutes 20`" in text
    (tmp_path / "faults.json").write_text("{not json")
    assert reliability.main(["--dir", str(tmp_path)]) == 1
    assert "faults.json: not valid JSON" in capsys.readouterr().err


def test_keep_carries_runs_without_a_new_report_over_from_the_file_it_replaces(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write(first, "crashloop.json", CRASH)
    write(first, "soak-20min.json", {"name": "soak", "command": "python -m s5vec_tools.soak --minutes 20",
                                     "seconds": 1300, "ok": True, "summary": {"memory_growth_pct": 1.7}})
    out = tmp_path / "RELIABILITY.md"
    assert reliability.main(["--dir", str(first), "--write", str(out)]) == 0
    write(second, "hostile.json", {"name": "hostile", "command": "python -m s5vec_tools.hostile", "seconds": 90,
                                   "ok": True, "summary": {"lost": 0}})
    assert reliability.main(["--dir", str(second), "--write", str(out), "--keep"]) == 0
    text = out.read_text()
    crash = text.split("## Crash loop", 1)[1].split("\n## ", 1)[0]
    assert "Not re-run this time: kept from the earlier report" in crash and "| kills | 50 |" in crash
    assert "| Crash loop (earlier run) | ok |" in text
    assert "## soak (soak-20min.json)" in text and "memory growth pct 1.7" in text
    assert "## Adversarial run" in text and "## Faults" not in text
    assert "Not run: no `faults.json`" in text
    again = reliability.main(["--dir", str(second), "--write", str(out), "--keep"])
    assert again == 0 and out.read_text().count("Not re-run this time") == text.count("Not re-run this time")
    assert "(earlier run) (earlier run)" not in out.read_text()
