"""Interleaved rounds: every target (the service and its reference) inside each round, at
each concurrency, in an order that rotates from round to round; a round in which the machine
was busy with foreign work is measured again (a bounded number of times, and recorded).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .loadgen import LoadResult
from .procstat import CpuAccount, account, quiesce, take_sample


@dataclass
class Target:
    """One thing to load: ``run(concurrency, seconds)`` drives it with wrk or pgbench."""

    name: str
    run: Callable[[int, float], LoadResult]
    # label -> root pid whose process tree's CPU is charged to this target's requests
    # ("service": the uvicorn process, "database": the postmaster with its backends).
    charge: dict[str, int] = field(default_factory=dict)
    concurrencies: Sequence[int] | None = None  # None: the run's concurrencies
    units_per_request: int = 1  # transfers per batch request, for per-unit figures
    before: Callable[[], None] | None = None  # before each measurement, not measured
    warm: bool = True  # False: the area warms it up itself (its warm-up needs setup)
    min_seconds: float = 0.0  # a longer measurement for slow requests (1,000-transfer batches)
    after: Callable[[LoadResult], dict[str, Any]] | None = None  # checks, extra figures

    def runs_at(self, concurrency: int, default: Sequence[int]) -> bool:
        return concurrency in (self.concurrencies or default)


@dataclass(frozen=True)
class Slot:
    round: int
    concurrency: int
    targets: tuple[str, ...]  # in the order they run


def schedule(targets: Sequence[Target], concurrencies: Sequence[int], rounds: int) -> list[Slot]:
    """Round by round, each concurrency (ascending) with every target that runs at it; the
    target order rotates by one each round so none is always first (or always after the
    heaviest one)."""
    levels = sorted({c for t in targets for c in (t.concurrencies or concurrencies)})
    slots = []
    for r in range(rounds):
        for c in levels:
            names = [t.name for t in targets if t.runs_at(c, concurrencies)]
            if names:
                k = r % len(names)
                slots.append(Slot(r, c, tuple(names[k:] + names[:k])))
    return slots


def is_noisy(foreign_cores: float, threshold: float) -> bool:
    """Noisy: work outside the benchmark used more than ``threshold`` cores on average."""
    return foreign_cores > threshold


@dataclass
class Cell:
    """One measurement: one target at one concurrency in one round (one attempt)."""

    target: str
    round: int
    concurrency: int
    attempt: int
    requests: int
    units: int
    seconds: float
    per_second: float  # units per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int
    cpu_us_per_unit: dict[str, float]  # charged label -> µs per unit; "client" too
    foreign_cores: float
    loadavg: float
    noisy: bool
    extra: dict[str, Any] = field(default_factory=dict)


def cell_from(
    target: Target,
    rnd: int,
    concurrency: int,
    attempt: int,
    result: LoadResult,
    cpu: CpuAccount,
    threshold: float,
) -> Cell:
    units = result.requests * target.units_per_request
    per_unit = {
        label: round(cpu.trees[pid] / units * 1e6, 1) if units else 0.0
        for label, pid in target.charge.items()
    }
    per_unit["client"] = round(result.client_seconds / units * 1e6, 1) if units else 0.0
    return Cell(
        target=target.name,
        round=rnd,
        concurrency=concurrency,
        attempt=attempt,
        requests=result.requests,
        units=units,
        seconds=round(result.seconds, 3),
        per_second=round(units / max(result.seconds, 1e-9), 1),
        p50_ms=round(result.p50_ms, 3),
        p90_ms=round(result.p90_ms, 3),
        p99_ms=round(result.p99_ms, 3),
        p999_ms=round(result.p999_ms, 3),
        max_ms=round(result.max_ms, 3),
        errors=result.errors,
        cpu_us_per_unit=per_unit,
        foreign_cores=round(cpu.foreign_cores, 3),
        loadavg=cpu.loadavg,
        # No request completed in the window: nothing was measured; redo it like a noisy one.
        noisy=is_noisy(cpu.foreign_cores, threshold) or units == 0,
    )


def measure(
    target: Target,
    rnd: int,
    concurrency: int,
    seconds: float,
    *,
    attempt: int,
    roots: Iterable[int],
    threshold: float,
) -> Cell:
    roots = set(roots) | set(target.charge.values())
    if target.before is not None:
        target.before()
    waited = quiesce(roots)
    if waited > 5:
        sys.stdout.write(f"  (waited {waited:.0f} s for the processes under test to go idle)\n")
    before = take_sample(roots)
    result = target.run(concurrency, max(seconds, target.min_seconds))
    # Let PostgreSQL reap the backends of a finished pgbench run, so their CPU has moved to
    # the postmaster's cutime/cstime when we sample.
    time.sleep(0.1)
    after = take_sample(roots)
    cell = cell_from(
        target, rnd, concurrency, attempt, result, account(before, after, result.client_seconds),
        threshold,
    )  # fmt: skip
    if target.after is not None:
        cell.extra = target.after(result)
    if cell.errors:
        raise RuntimeError(f"{target.name} at c={concurrency}: {cell.errors} errors ({result})")
    quiesce(roots)  # what was still in flight is not the next measurement's
    return cell


Measure = Callable[[Target, int, int, int], Cell]  # target, round, concurrency, attempt


def run_slots(
    slots: Sequence[Slot],
    targets: Sequence[Target],
    measure_one: Measure,
    *,
    max_redos: int,
) -> tuple[list[Cell], list[Cell]]:
    """Measure every slot; a slot with a noisy cell is measured again, whole (every target
    again, so the comparison stays within one stretch of time), up to ``max_redos`` times.
    The attempt with the least foreign CPU is kept. Returns (kept cells, discarded cells)."""
    by_name = {t.name: t for t in targets}
    kept: list[Cell] = []
    discarded: list[Cell] = []
    for slot in slots:
        attempts: list[list[Cell]] = []
        for attempt in range(max_redos + 1):
            cells = [
                measure_one(by_name[name], slot.round, slot.concurrency, attempt)
                for name in slot.targets
            ]
            attempts.append(cells)
            noisy = [c for c in cells if c.noisy]
            _log(slot, cells)
            if not noisy:
                break
        best = min(attempts, key=lambda cells: max(c.foreign_cores for c in cells))
        kept += best
        discarded += [c for cells in attempts if cells is not best for c in cells]
    return kept, discarded


def _log(slot: Slot, cells: Sequence[Cell]) -> None:
    for c in cells:
        sys.stdout.write(
            f"  round {slot.round + 1} c={slot.concurrency} {c.target}: {c.per_second:,.1f}/s "
            f"p50 {c.p50_ms} ms p99 {c.p99_ms} ms cpu/unit {c.cpu_us_per_unit} µs "
            f"foreign {c.foreign_cores:.2f} cores{' NOISY' if c.noisy else ''}\n"
        )
    sys.stdout.flush()


# --- summaries ------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median with the min-max spread."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def summarize(cells: Sequence[Cell]) -> dict[str, dict[int, dict[str, Any]]]:
    """target -> concurrency -> medians and spreads over the kept rounds."""
    groups: dict[tuple[str, int], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.target, c.concurrency), []).append(c)
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for (name, conc), group in groups.items():
        labels = sorted({label for c in group for label in c.cpu_us_per_unit})
        out.setdefault(name, {})[conc] = {
            "rounds": len(group),
            "per_second": spread([c.per_second for c in group]),
            "p50_ms": spread([c.p50_ms for c in group]),
            "p99_ms": spread([c.p99_ms for c in group]),
            "cpu_us_per_unit": {
                label: spread([c.cpu_us_per_unit.get(label, 0.0) for c in group])
                for label in labels
            },
            "foreign_cores": spread([c.foreign_cores for c in group]),
            "noisy_rounds": sum(c.noisy for c in group),
        }
    return out


def ratios(cells: Sequence[Cell], target: str, reference: str, concurrency: int) -> list[float]:
    """Per-round throughput ratio target/reference (both measured in the same round)."""
    ours = {
        c.round: c.per_second for c in cells if c.target == target and c.concurrency == concurrency
    }
    refs = {
        c.round: c.per_second
        for c in cells
        if c.target == reference and c.concurrency == concurrency
    }
    return [ours[r] / refs[r] for r in sorted(ours) if r in refs and refs[r] > 0]


def as_dicts(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    return [asdict(c) for c in cells]
