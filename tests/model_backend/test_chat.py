"""SmolLM2-135M-Instruct through the real server: answers, SSE shape, exact usage."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import httpx
from gguf import GGUFReader
from tokenizers import Tokenizer

from azora_model_backend.chat import Message, gguf_path, render_chat, tokenizer_from_gguf

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@cache
def tokenizer() -> Tokenizer:
    return tokenizer_from_gguf(GGUFReader(gguf_path()))


def prompt_tokens(messages: list[dict[str, str]]) -> int:
    text = render_chat([Message(m["role"], m["content"]) for m in messages])
    return len(tokenizer().encode(text, add_special_tokens=False).ids)


def complete(client: httpx.Client, **body: Any) -> dict[str, Any]:
    resp = client.post("/v1/chat/completions", json={"model": MODEL, **body})
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def stream(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": MODEL, "stream": True, **body}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert line.startswith("data: ")
        chunks.append(json.loads(line.removeprefix("data: ")))
    return chunks


def test_answers_a_simple_question_correctly(client: httpx.Client) -> None:
    answer = complete(client, messages=QUESTION, max_tokens=24)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == MODEL
    assert answer["system_fingerprint"] == "azora-model-backend:test-a"
    (choice,) = answer["choices"]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"  # the model ended its turn itself


def test_usage_counts_are_exact(client: httpx.Client) -> None:
    answer = complete(client, messages=QUESTION, max_tokens=3)
    usage = answer["usage"]
    assert usage["prompt_tokens"] == prompt_tokens(QUESTION)
    # Stopped by the limit: exactly max_tokens tokens were generated.
    assert answer["choices"][0]["finish_reason"] == "length"
    assert usage["completion_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + 3


def test_a_system_message_replaces_the_default_one(client: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Name a colour."},
    ]
    answer = complete(client, messages=messages, max_tokens=2)
    assert answer["usage"]["prompt_tokens"] == prompt_tokens(messages)
    assert prompt_tokens(messages) < prompt_tokens(messages[1:])  # default system is longer


def test_stream_has_the_openai_chunk_shape_and_the_same_text_and_usage(
    client: httpx.Client,
) -> None:
    whole = complete(client, messages=QUESTION, max_tokens=24)
    chunks = stream(
        client, messages=QUESTION, max_tokens=24, stream_options={"include_usage": True}
    )
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c for c in chunks[1:] if c["choices"] and c["choices"][0]["delta"]]
    assert len(content) >= 2  # streamed token by token, not in one piece
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    # Greedy decoding is deterministic: the stream says what the plain answer said.
    assert text == whole["choices"][0]["message"]["content"]
    finish = chunks[-2]
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == whole["usage"]


def test_stream_without_include_usage_has_no_usage_chunk(client: httpx.Client) -> None:
    chunks = stream(client, messages=QUESTION, max_tokens=2)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_stop_sequence_cuts_the_answer(client: httpx.Client) -> None:
    answer = complete(client, messages=QUESTION, max_tokens=24, stop=["Paris"])
    choice = answer["choices"][0]
    assert "Paris" not in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    chunks = stream(client, messages=QUESTION, max_tokens=24, stop="Paris")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == choice["message"]["content"]


def test_sampling_with_a_seed_is_repeatable(client: httpx.Client) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Tell me about cats."}],
        "max_tokens": 6,
        "temperature": 1.0,
        "top_p": 0.9,
        "seed": 7,
    }
    first = complete(client, **body)["choices"][0]["message"]["content"]
    second = complete(client, **body)["choices"][0]["message"]["content"]
    assert first == second


def test_text_content_parts_are_accepted(client: httpx.Client) -> None:
    parts = [
        {"type": "text", "text": "What is the capital of "},
        {"type": "text", "text": "France?"},
    ]
    answer = complete(client, messages=[{"role": "user", "content": parts}], max_tokens=3)
    assert answer["usage"]["prompt_tokens"] == prompt_tokens(QUESTION)
