"""``azora-operator run`` with tracemalloc, for bench/operator/profile.py (not shipped).

On SIGUSR1 it writes the top allocation sites, the number of asyncio tasks (grouped by
coroutine) and the number of threads to ``$AZORA_PROFILE_OUT``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import threading
import tracemalloc
from pathlib import Path
from types import FrameType

from azora_operator.cli import main


def _dump(signum: int, frame: FrameType | None) -> None:
    out = Path(os.environ["AZORA_PROFILE_OUT"])
    lines: list[str] = []
    snapshot = tracemalloc.take_snapshot()
    traced, peak = tracemalloc.get_traced_memory()
    lines.append(f"traced {traced / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB")
    for stat in snapshot.statistics("filename")[:15]:
        lines.append(f"  {stat.size / 2**20:7.2f} MiB {stat.count:8d} {stat.traceback}")
    lines.append("by line:")
    for stat in snapshot.statistics("lineno")[:25]:
        lines.append(f"  {stat.size / 2**20:7.2f} MiB {stat.count:8d} {stat.traceback}")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    tasks = asyncio.all_tasks(loop) if loop is not None else set()
    names = collections.Counter(
        getattr(t.get_coro(), "__qualname__", type(t.get_coro()).__name__) for t in tasks
    )
    lines.append(f"asyncio tasks: {len(tasks)}")
    for name, count in names.most_common(15):
        lines.append(f"  {count:6d} {name}")
    lines.append(f"threads: {threading.active_count()}")
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, _dump)
    sys.argv = ["azora-operator", "run"]
    main()
