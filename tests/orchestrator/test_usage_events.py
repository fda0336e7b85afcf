"""Which upstream bytes the gateway parses for usage: only a ``"usage"`` whose value is an
object. Streams that were asked for usage carry ``"usage": null`` in every chunk but the
last; those chunks are relayed as they are, unparsed."""

from __future__ import annotations

from azora_orchestrator.upstream import _carries_usage, _stream_usage, _without_usage_event

NULL_CHUNK = b'data: {"id":"c1","choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE_CHUNK = (
    b'data: {"id":"c1","choices":[],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
)


def test_a_null_usage_is_not_usage() -> None:
    assert not _carries_usage(NULL_CHUNK)
    assert _stream_usage(NULL_CHUNK) is None
    assert _without_usage_event(NULL_CHUNK) == NULL_CHUNK


def test_a_usage_object_is_found_and_stripped_when_the_client_did_not_ask() -> None:
    assert _carries_usage(USAGE_CHUNK)
    assert _carries_usage(b'{"usage" : {}}')
    assert _stream_usage(USAGE_CHUNK) == {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
    }
    assert _without_usage_event(NULL_CHUNK + USAGE_CHUNK) == NULL_CHUNK


def test_usage_quoted_inside_content_is_not_a_key() -> None:
    assert not _carries_usage(b'{"content":"the \\"usage\\": {} key"}')
