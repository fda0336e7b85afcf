"""The official ``openai`` client against the real server."""

from __future__ import annotations

import numpy as np
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from tests.model_backend.conftest import Backend


@pytest.fixture
def oai(backend: Backend) -> OpenAI:
    return OpenAI(base_url=backend.v1, api_key="not-needed", max_retries=0, timeout=120)


def test_chat_completion(oai: OpenAI) -> None:
    answer = oai.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
    )
    assert "Paris" in (answer.choices[0].message.content or "")
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_streaming_chat_completion_with_usage(oai: OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_embeddings_default_base64_and_float_agree(oai: OpenAI) -> None:
    # The client asks for base64 by default and decodes it itself.
    default = oai.embeddings.create(model="all-MiniLM-L6-v2", input=["one", "two"])
    floats = oai.embeddings.create(
        model="all-MiniLM-L6-v2", input=["one", "two"], encoding_format="float"
    )
    a = np.array([d.embedding for d in default.data])
    b = np.array([d.embedding for d in floats.data])
    assert a.shape == (2, 384)
    np.testing.assert_allclose(a, b, atol=1e-7)


def test_models_list(oai: OpenAI) -> None:
    assert {m.id for m in oai.models.list()} == {"SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"}


def test_errors_surface_as_the_clients_exceptions(oai: OpenAI) -> None:
    with pytest.raises(NotFoundError):
        oai.embeddings.create(model="nope", input="x")
    with pytest.raises(BadRequestError):
        oai.embeddings.create(model="all-MiniLM-L6-v2", input="")
