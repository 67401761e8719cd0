"""``python -m s5vec_tools.quantizers``: IVF codes side by side over one shared quantizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from s5vec_tools import quantizers

TINY = ["--scale", "5000", "--queries", "20", "--time-queries", "8", "--train-sample", "5000", "--nlists", "16",
        "--nprobes", "2,16", "--depths", "160,1000", "--candidates", "Flat,PQ48x4fs,RaBitQ:qb8,RaBitQfs,SQ8"]


def test_tiny_run_writes_every_point_and_exhaustive_settings_reach_recall_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q.json"
    assert quantizers.main([*TINY, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    names = ["Flat", "PQ48x4fs", "RaBitQ:qb8", "RaBitQfs", "SQ8"]
    assert results["parameters"]["candidates"] == names
    [section] = results["nlists"]
    assert section["nlist"] == 16 and section["nprobes"] == [2, 16]
    assert [b["codes"] for b in section["builds"]] == ["Flat", "PQ48x4fs", "RaBitQ", "RaBitQfs", "SQ8"]
    assert {b["class"] for b in section["builds"]} >= {"IndexIVFPQFastScan", "IndexIVFRaBitQ", "IndexIVFRaBitQFastScan"}
    assert all(b["code_size"] > 0 and b["stored_bytes_per_vector"] >= b["code_size"] for b in section["builds"])
    points = {(p["candidate"], p["nprobe"], p["rerank"]): p for p in section["points"]}
    assert set(points) == {(c, p, d) for c in names for p in (2, 16) for d in (160, 1000)}
    for p in points.values():
        assert 0.0 <= p["recall@10"] <= 1.0
        assert p["p50_ms"] > 0 and p["qps_2_threads"] > 0
    # Every list probed: the exact codes find the exact top 10, and so does every code
    # with 1,000 of the 5,000 rows re-ranked exactly.
    assert points["Flat", 16, 160]["recall@10"] == 1.0
    assert all(points[c, 16, 1000]["recall@10"] == 1.0 for c in names)
    assert [c["ceiling"] for c in section["ceiling"] if c["nprobe"] == 16] == [1.0]
    # Two of 16 lists cannot hold every neighbour; the ceiling bounds what any code reaches.
    ceiling2 = next(c["ceiling"] for c in section["ceiling"] if c["nprobe"] == 2)
    assert ceiling2 < 1.0 and all(points[c, 2, d]["recall@10"] <= ceiling2 for c in names for d in (160, 1000))
    assert [f["candidate"] for f in results["frontier"]] == names
    assert results["frontier"][0]["best_qps"]["recall@10"] >= 0.95
    assert "Frontier" in capsys.readouterr().out


def test_unknown_codes_and_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        quantizers.build_parser().parse_args(["--candidates", "PQ96x4fs:qb4"])
    assert ":qb1..:qb8, for RaBitQ codes" in capsys.readouterr().err
    assert quantizers.parse_candidate("RaBitQ:qb8") == quantizers.Candidate("RaBitQ:qb8", "RaBitQ", 8)
    assert quantizers.main(["--scale", "100", "--nlists", "16", "--out", "unused.json"]) == 2
    assert "rows per list" in capsys.readouterr().err
