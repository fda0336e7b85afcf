"""Streaming load client (its own process): time to first body chunk and to the end.

``python ttft.py URL N [TOKEN]`` prints JSON {"ttft_ms": [...], "total_ms": [...], "errors": n}.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson

BODY = orjson.dumps(
    {
        "model": "bench",
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16,
    }
)


async def main(url: str, n: int, token: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    ttft: list[float] = []
    total: list[float] = []
    errors = 0
    async with aiohttp.ClientSession() as session:
        for i in range(n + 20):
            start = time.perf_counter()
            async with session.post(url, data=BODY, headers=headers) as resp:
                first = await resp.content.readany()
                t1 = time.perf_counter()
                async for _ in resp.content.iter_any():
                    pass
                t2 = time.perf_counter()
                if resp.status != 200 or not first:
                    errors += 1
            if i >= 20:  # warm-up excluded
                ttft.append((t1 - start) * 1000)
                total.append((t2 - start) * 1000)
    sys.stdout.write(orjson.dumps({"ttft_ms": ttft, "total_ms": total, "errors": errors}).decode())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
