"""End to end: the crash-loop harness (``s5vec bench --crash-loop``) against real
``s5vec serve`` subprocesses — a short loop that must pass, and one with a WAL torn behind
the daemon's back that must fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA
from s5vec_tools.crashloop import PHASES, Options, crash_loop

pytestmark = pytest.mark.e2e
KILLS = 12  # two per phase: restarts take 5-10 s on a busy two-core machine; `make crash-loop` runs hundreds


@pytest.mark.timeout(900)
async def test_crash_loop_keeps_every_acknowledged_write_through_sigkills_in_every_phase(tmp_path: Path) -> None:
    result = await crash_loop(Options(kills=KILLS, seed=11, data_dir=tmp_path, data=DATA,
                                      max_records=1500))
    assert result["violations"] == []
    assert result["ok"]
    summary = result["summary"]
    assert summary["kills"] == KILLS
    assert all(summary["phases"][phase]["kills"] >= 1 for phase in PHASES), summary["phases"]
    assert summary["recall_at_10"]["min"] >= 0.95
    assert summary["acknowledged_writes"] > 0


def tear_wal(data_dir: Path, number: int) -> None:
    """Cut every WAL segment to a third, as a disk that lied about fsync would."""
    if number == 1:
        for path in (data_dir / "wal").glob("*.wal"):
            size = path.stat().st_size
            with open(path, "r+b") as f:
                f.truncate(size // 3)


@pytest.mark.timeout(300)
async def test_crash_loop_reports_acknowledged_writes_lost_with_a_torn_wal(tmp_path: Path) -> None:
    options = Options(kills=1, seed=5, data_dir=tmp_path, data=DATA, phases=("ingest",),
                      env={"S5VEC_ENGINE__CHECKPOINT_INTERVAL_S": "3600"}, before_restart=tear_wal)
    result = await crash_loop(options)
    assert not result["ok"]
    lost = [v for v in result["violations"] if v.startswith("kill 1 (ingest): id ") and "(lost write)" in v]
    assert lost, result["violations"][:5]
