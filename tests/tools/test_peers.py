"""The peer benchmark's adapters on a tiny slice: recall computation and result shape.

Only the engines of the default install run here (raw hnswlib, raw faiss, s5vec); the
peers (Chroma, LanceDB, Qdrant) come with the tools' optional ``peers`` extra and are exercised
by ``s5vec bench --peers`` itself, which reports any that cannot run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from s5vec_tools import peers
from s5vec_tools.dataset import exact_topk

DEFAULT_ENGINES = ("hnswlib", "faiss", "s5vec")
log = logging.getLogger(__name__)


def _installed(engines: tuple[str, ...]) -> list[str]:
    out = []
    for engine in engines:
        reason = peers.available(engine)
        if reason:
            log.warning("peer adapter %s not exercised: %s", engine, reason)
        else:
            out.append(engine)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("peers")
    rng = np.random.default_rng(3)
    base = rng.standard_normal((600, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[:25] + np.float32(0.05) * rng.standard_normal((25, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    np.save(path / "base.npy", base)
    np.save(path / "queries.npy", queries)
    np.save(path / "gt.npy", exact_topk(base, queries, peers.K))
    filters = peers.prepare_filters(path, len(base), lambda _line: None)
    (path / "filters.json").write_text(json.dumps(filters))
    return path


def test_filters_cover_every_target_selectivity_with_exact_ground_truth(work: Path) -> None:
    filters = json.loads((work / "filters.json").read_text())
    assert [c["target"] for c in filters] == [0.5, 0.1, 0.01, 0.001]
    views = np.load(work / "views.npy")
    for case in filters:
        truth = np.load(work / case["gt"])
        assert (views[truth] >= case["threshold"]).all()
        assert truth.shape[1] == min(peers.K, case["matches"])


@pytest.mark.parametrize("engine", _installed(DEFAULT_ENGINES))
def test_adapter_finds_the_exact_neighbours_at_a_large_ef_and_reports_every_measurement(
        engine: str, work: Path) -> None:
    out = work / f"{engine}.json"
    assert peers.run_worker(engine, work, quick=True, min_time=0.0, out=out) == 0
    result = json.loads(out.read_text())
    assert result["engine"] == engine
    assert result["ingest"]["vectors"] == 600
    assert [row["knob"] for row in result["search"]] == [str(k) for k in peers.QUICK_EFS]
    for row in result["search"]:
        assert 0.0 <= row["recall@10"] <= 1.0
        assert row["queries"] >= 25 and row["qps"] > 0 and row["p99_ms"] >= row["p50_ms"]
    assert result["search"][-1]["recall@10"] >= 0.95  # ef=128 over 600 vectors is near exhaustive
    assert [row["target"] for row in result["filtered"]] == [0.5, 0.1, 0.01, 0.001]
    if engine != "hnswlib":  # hnswlib gives up (no result) when fewer than k records match
        assert all(row["recall@10"] >= 0.9 for row in result["filtered"])


def test_recall_is_computed_against_the_ground_truth_rows() -> None:
    gt = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]], np.int32)

    class Fixed:
        knobs = ("x",)
        errors = 0

        def set_knob(self, knob: object) -> None:
            pass

        def search(self, q: np.ndarray, k: int, views_min: int | None = None) -> list[int]:
            return [0, 1, 2, 3, 4, 50, 51, 52, 53, 54]

    row = peers.measure(Fixed(), np.zeros((1, 4), np.float32), gt, "x", min_time=0.0, warmup=0)
    assert row["recall@10"] == 0.5
    assert row["knob"] == "x" and row["errors"] == 0


def test_operating_point_is_the_fastest_sweep_point_reaching_the_recall_target() -> None:
    rows = [{"knob": "16", "recall@10": 0.90, "qps": 900.0}, {"knob": "64", "recall@10": 0.96, "qps": 500.0},
            {"knob": "128", "recall@10": 0.99, "qps": 300.0}]
    assert peers.operating_point(rows)["knob"] == "64"
    assert peers.operating_point(rows[:1]) is None


def test_an_engine_that_is_not_installed_is_reported_not_hidden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(peers, "available", lambda engine: "not installed (test)")
    assert peers.run_engine("chroma", tmp_path, quick=True, min_time=0.0) == {
        "engine": "chroma", "not_run": "not installed (test)"}


def test_each_http_point_reports_the_median_of_its_repeated_runs(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    qps = iter([900.0, 1500.0, 1200.0, 50.0, 70.0, 60.0])
    calls: list[list[str]] = []

    def fake(args: list[str], timeout: float) -> tuple[int, str, float]:
        calls.append(args)
        out = Path(args[args.index("--out") + 1])
        out.write_text(json.dumps({"qps": next(qps), "recall@10": 0.9, "p50_ms": 1.0, "p99_ms": 2.0, "errors": []}))
        return 0, "", 0.1

    monkeypatch.setattr(peers, "_subprocess", fake)
    knobs: list[int] = []
    rows = peers._http_sweep("s5vec", "http://127.0.0.1:9/x", tmp_path, [16, 64], 8, 1.0, None, set_ef=knobs.append)
    assert knobs == [16, 64] and len(calls) == 6
    assert [(r["knob"], r["qps"], r["qps_runs"]) for r in rows] == [
        ("16", 1200.0, [900.0, 1500.0, 1200.0]), ("64", 60.0, [50.0, 70.0, 60.0])]
