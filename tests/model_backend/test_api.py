"""Models listing, health, metrics, and bad input: always a 4xx in the OpenAI error shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from azora_model_backend.service import StopScanner


def test_models_lists_both_and_says_what_they_are(client: httpx.Client) -> None:
    resp = client.get("/v1/models")
    assert resp.status_code == 200
    assert resp.headers["x-azora-instance"] == "test-a"
    body = resp.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert set(by_id) == {"SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"}
    assert by_id["SmolLM2-135M-Instruct"]["azora"]["kind"] == "chat"
    assert by_id["all-MiniLM-L6-v2"]["azora"]["dimensions"] == 384
    assert all(m["object"] == "model" for m in body["data"])


def test_healthz_names_the_instance(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "instance": "test-a"}


def test_metrics_count_requests_and_tokens_per_instance(client: httpx.Client) -> None:
    client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "metrics"})
    text = client.get("/metrics").text
    assert (
        'azora_model_backend_requests_total{endpoint="embeddings",instance_name="test-a",'
        'status="200"}' in text
    )
    assert (
        'azora_model_backend_tokens_total{instance_name="test-a",model="all-MiniLM-L6-v2",type="input"}'
        in text
    )
    assert "azora_model_backend_info{" in text


CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"
USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (CHAT, b"{not json", 400, "invalid_json"),
        (CHAT, b"[]", 400, "invalid_request"),
        (CHAT, {"messages": USER}, 400, "invalid_request"),
        (CHAT, {"model": "SmolLM2-135M-Instruct", "messages": []}, 400, "invalid_request"),
        (CHAT, {"model": "SmolLM2-135M-Instruct"}, 400, "invalid_request"),
        (
            CHAT,
            {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "invalid_request",
        ),
        (
            CHAT,
            {
                "model": "SmolLM2-135M-Instruct",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            400,
            "invalid_request",
        ),
        (CHAT, {"model": "gpt-4o", "messages": USER}, 404, "model_not_found"),
        (CHAT, {"model": "all-MiniLM-L6-v2", "messages": USER}, 400, "invalid_request"),
        (
            CHAT,
            {"model": "SmolLM2-135M-Instruct", "messages": USER, "n": 2},
            400,
            "invalid_request",
        ),
        (
            CHAT,
            {"model": "SmolLM2-135M-Instruct", "messages": USER, "max_tokens": 0},
            400,
            "invalid_request",
        ),
        (
            CHAT,
            {"model": "SmolLM2-135M-Instruct", "messages": USER, "max_tokens": 10**6},
            400,
            "invalid_request",
        ),
        (
            CHAT,
            {"model": "SmolLM2-135M-Instruct", "messages": USER, "temperature": 5},
            400,
            "invalid_request",
        ),
        (
            CHAT,
            {"model": "SmolLM2-135M-Instruct", "messages": USER, "stop": ["a", "b", "c", "d", "e"]},
            400,
            "invalid_request",
        ),
        (
            CHAT,
            {
                "model": "SmolLM2-135M-Instruct",
                "messages": [{"role": "user", "content": "word " * 6000}],
            },
            400,
            "context_length_exceeded",
        ),
        (
            CHAT,
            {"model": "SmolLM2-135M-Instruct", "messages": USER, "pad": "x" * 70000},
            413,
            "request_too_large",
        ),
        (EMB, {"model": "all-MiniLM-L6-v2", "input": ""}, 400, "invalid_request"),
        (EMB, {"model": "all-MiniLM-L6-v2", "input": []}, 400, "invalid_request"),
        (EMB, {"model": "all-MiniLM-L6-v2", "input": [1, 2, 3]}, 400, "invalid_request"),
        (
            EMB,
            {"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 128},
            400,
            "invalid_request",
        ),
        (
            EMB,
            {"model": "all-MiniLM-L6-v2", "input": "x", "encoding_format": "int8"},
            400,
            "invalid_request",
        ),
        (EMB, {"model": "SmolLM2-135M-Instruct", "input": "x"}, 400, "invalid_request"),
        (EMB, {"model": "text-embedding-3-small", "input": "x"}, 404, "model_not_found"),
        (EMB, {"input": "x"}, 400, "invalid_request"),
    ],
)
def test_bad_input_is_a_4xx_in_the_openai_error_shape(
    client: httpx.Client, path: str, body: Any, status: int, code: str
) -> None:
    if isinstance(body, bytes):
        resp = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        resp = client.post(path, json=body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_wrong_method_and_unknown_path_are_4xx(client: httpx.Client) -> None:
    assert client.get(CHAT).status_code == 405
    assert client.get("/v1/nothing").status_code == 404


def test_stop_scanner_holds_back_a_partial_match() -> None:
    s = StopScanner(["END"])
    assert s.feed("abc E") == "abc "
    assert s.feed("N") == ""
    assert s.feed("X") == "ENX"
    assert s.feed("..EN") == ".."
    assert s.feed("D more") == ""
    assert s.stopped
