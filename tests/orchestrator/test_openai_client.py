"""The official openai client, unchanged, against the gateway."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import API_TOKEN
from tests.orchestrator.conftest import Admin, Gw, backend_spec, unique
from tests.orchestrator.fakes import Reply


async def test_openai_sync_and_streaming(gw: Gw, admin: Admin, backends) -> None:
    a = await backends("a")
    model = unique("oai")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, model="upstream-x")]})

    def run_sync() -> tuple[str | None, int, list[str], list[str]]:
        client = openai.OpenAI(base_url=gw.v1, api_key=API_TOKEN, max_retries=0)
        try:
            done = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}]
            )
            pieces: list[str] = []
            with client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            ) as stream:
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        pieces.append(chunk.choices[0].delta.content)
            models = [m.id for m in client.models.list()]
            emb = client.embeddings.create(model=model, input="hello")
            assert emb.data[0].embedding == [0.1, 0.2, 0.3]
        finally:
            client.close()
        assert done.usage is not None
        return done.choices[0].message.content, done.usage.total_tokens, pieces, models

    content, total, pieces, models = await asyncio.to_thread(run_sync)
    assert content == "hello from a"
    assert total == a.prompt_tokens + a.completion_tokens
    assert pieces == ["t0 ", "t1 ", "t2 ", "t3 "]
    assert model in models
    assert all(body["model"] == "upstream-x" for body in a.bodies)


async def test_openai_async_client_errors(gw: Gw, admin: Admin, backends) -> None:
    a = await backends("a")
    model = unique("oai-err")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=API_TOKEN, max_retries=0)
    try:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "hi"}]
            )
        assert missing.value.code == "model_not_found"
        bad = openai.AsyncOpenAI(base_url=gw.v1, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
        await bad.close()
        a.script.append(Reply(mode="midstream"))
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="stream failed"):
            async for _ in stream:
                pass
    finally:
        await client.close()
