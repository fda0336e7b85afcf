"""Runtime tuning applied once per process, at start-up, for every service.

The cyclic garbage collector is the one knob that matters here. A request allocates thousands
of short-lived objects (parsed bodies, models, response dicts), almost none of them in reference
cycles, so reference counting frees them at once; yet with CPython's default young-generation
threshold (700 net allocations) the collector runs many times per request, and every tenth
young collection cascades into older generations that walk every long-lived object of the
process (routes, snapshots, the framework itself). Measured on the gateway: a full collection of
~84 ms about every 0.6 s under load, which was its whole p99 tail; on the ledger a large share
of a 1,000-item batch's CPU.

``tune_gc`` moves everything alive after warm-up out of the collector's reach (``gc.freeze``)
and raises the young threshold. Memory does not grow with it: acyclic garbage is still freed by
reference counting immediately; cyclic garbage is collected, just less often.
"""

from __future__ import annotations

import gc

DEFAULT_GC_THRESHOLD = 50_000


def tune_gc(young_threshold: int) -> None:
    """Freeze the warmed-up heap and collect the young generation every ``young_threshold``
    net allocations. ``0`` keeps CPython's defaults (for comparison runs)."""
    if young_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(young_threshold, gen1, gen2)
