"""all-MiniLM-L6-v2 through the real server: real numbers, checked against known values."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

MODEL = "all-MiniLM-L6-v2"

# The sentence-transformers quick start (its README and sbert.net) prints this cosine
# similarity matrix for all-MiniLM-L6-v2, computed with PyTorch; a numpy forward pass that
# matches it to 4 decimals is the same model.
REFERENCE_SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
]
REFERENCE_SIMILARITIES = np.array(
    [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]
)


def embed(client: httpx.Client, inputs: str | list[str], **extra: object) -> np.ndarray:
    resp = client.post("/v1/embeddings", json={"model": MODEL, "input": inputs, **extra})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float64)


def test_matches_the_published_sentence_transformers_similarities(client: httpx.Client) -> None:
    vectors = embed(client, REFERENCE_SENTENCES)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors @ vectors.T, REFERENCE_SIMILARITIES, atol=6e-4)


def test_vectors_are_unit_length_and_384_wide(client: httpx.Client) -> None:
    one = embed(client, "A single sentence.")
    assert one.shape == (1, 384)
    assert abs(np.linalg.norm(one[0]) - 1.0) < 1e-5


def test_paraphrases_are_far_closer_than_unrelated_sentences(client: httpx.Client) -> None:
    v = embed(
        client,
        [
            "How do I reset my password?",
            "I forgot my password, how can I change it?",
            "The stock market fell sharply on Tuesday.",
            "A cat is sleeping on the sofa.",
        ],
    )
    sim = v @ v.T
    assert sim[0, 1] > 0.6
    assert sim[0, 2] < 0.2
    assert sim[0, 3] < 0.2
    assert sim[0, 1] - max(sim[0, 2], sim[0, 3]) > 0.5


def test_a_batch_gives_the_same_vectors_as_one_at_a_time_in_order(
    client: httpx.Client,
) -> None:
    # Different lengths in one batch exercise the padding mask and the length sort.
    texts = ["short", "a somewhat longer sentence with many more word pieces in it", "medium one"]
    batch = embed(client, texts)
    singles = np.vstack([embed(client, t) for t in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_base64_encodes_the_same_float32_values(client: httpx.Client) -> None:
    floats = embed(client, "base64 check")
    resp = client.post(
        "/v1/embeddings",
        json={"model": MODEL, "input": "base64 check", "encoding_format": "base64"},
    )
    assert resp.status_code == 200
    raw = base64.b64decode(resp.json()["data"][0]["embedding"])
    decoded = np.frombuffer(raw, dtype="<f4")
    assert decoded.shape == (384,)
    np.testing.assert_allclose(decoded, floats[0], atol=1e-7)


@pytest.mark.parametrize(
    ("inputs", "tokens"),
    [
        ("hello world", 4),  # [CLS] hello world [SEP]
        (["hello world", "hi"], 7),
    ],
)
def test_usage_counts_the_word_pieces_embedded(
    client: httpx.Client, inputs: str | list[str], tokens: int
) -> None:
    resp = client.post("/v1/embeddings", json={"model": MODEL, "input": inputs})
    assert resp.json()["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_dimensions_equal_to_the_model_width_is_accepted(client: httpx.Client) -> None:
    assert embed(client, "x y z", dimensions=384).shape == (1, 384)
