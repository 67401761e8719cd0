"""``python -m s5vec_tools.faults``: one short round writes the report the reliability
page reads, with every fault kind injected and nothing lost or served corrupt."""

from __future__ import annotations

import json
from pathlib import Path

from s5vec_tools.faults import main


def test_one_round_of_the_fault_campaign_injects_every_kind_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    assert main(["--rounds", "1", "--seed", "7", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["name"] == "faults" and report["ok"] is True and report["seconds"] > 0
    assert report["command"].startswith("python -m s5vec_tools.faults")
    summary = report["summary"]
    assert summary["lost"] == 0 and summary["corrupt_served"] == 0
    assert summary["acknowledged"] > 0 and summary["refused"] > 0
    kinds = set(summary["faults_injected"])
    assert {"torn WAL tail", "flipped blob byte"} <= kinds
    assert any(k.startswith("WAL write") for k in kinds) and any(k.startswith("checkpoint") for k in kinds)
    assert any(k.startswith("portal") for k in kinds)
