"""The shared bench method (docs: bench/harness/README.md).

from bench.harness import Bench, Comparison, Target, parser, wrk
bench = Bench(parser(__doc__).parse_args())
with bench:  # a PostgreSQL server (bench.db) and the processes it starts (bench.procs)
    url = bench.database("azora_bench_ledger")
    service = bench.procs.serve("ledger", "azora_ledger", {"LEDGER_DATABASE_URL": url, ...})
    ...the targets and the references...
    doc = bench.run("ledger", "azora-ledger benchmark", targets, comparisons,
                    own_pids=[service.pid])
bench.finish(doc, notes=[...])
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .loadgen import LoadResult, pgbench, wrk, wrk_script
from .postgres import Database, database_server, recreate_database, settle
from .processes import Processes, Service, free_port
from .report import RESULTS, Comparison, git_commit, machine, markdown, today, write
from .rounds import Cell, Target, as_dicts, measure, ratios, run_slots, schedule, summarize

SMOKE_DIR = Path("/tmp/azora-bench-smoke")


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    seconds: float = 10.0
    concurrencies: tuple[int, ...] = (16, 64)
    warmup: float = 3.0
    noise_threshold: float = 0.10  # cores of foreign CPU
    max_redos: int = 2
    database: str = "durable"
    out: Path = RESULTS
    smoke: bool = False
    only: tuple[str, ...] = field(default_factory=tuple)


def add_arguments(
    parser: argparse.ArgumentParser, *, seconds: float = 10.0
) -> argparse.ArgumentParser:
    g = parser.add_argument_group("shared bench method (bench/harness)")
    g.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3 for results)")
    g.add_argument("--seconds", type=float, default=seconds, help="per measurement")
    g.add_argument("--concurrency", default="16,64", help="comma list (the scenario may add)")
    g.add_argument("--warmup", type=float, default=3.0, help="seconds per target, not measured")
    g.add_argument("--noise-threshold", type=float, default=0.10, help="foreign CPU, cores")
    g.add_argument("--max-redos", type=int, default=2, help="redos of a noisy round slot")
    g.add_argument("--database", choices=["durable", "fast"], default="durable")
    g.add_argument("--out", type=Path, help="results directory (default bench/results)")
    g.add_argument(
        "--smoke",
        action="store_true",
        help="1 round of 3 s, no redos, results under /tmp/azora-bench-smoke, marked SMOKE",
    )
    g.add_argument("--only", nargs="*", default=[], help="run only these targets")
    return parser


def parser(doc: str) -> argparse.ArgumentParser:
    """An area's command line: the first line of its docstring, and the shared options."""
    return add_arguments(argparse.ArgumentParser(description=doc.splitlines()[0]))


def settings_from(args: argparse.Namespace) -> Settings:
    smoke = args.smoke or args.rounds < 3
    return Settings(
        rounds=1 if args.smoke else args.rounds,
        seconds=3.0 if args.smoke else args.seconds,
        concurrencies=tuple(int(c) for c in str(args.concurrency).split(",")),
        warmup=1.0 if args.smoke else args.warmup,
        noise_threshold=args.noise_threshold,
        max_redos=0 if args.smoke else args.max_redos,
        database=args.database,
        out=args.out or (SMOKE_DIR if smoke else RESULTS),
        smoke=smoke,
        only=tuple(args.only or ()),
    )


def run(
    area: str,
    title: str,
    targets: Sequence[Target],
    comparisons: Sequence[Comparison],
    settings: Settings,
    *,
    database: Database | None,
    own_pids: Iterable[int | None] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Warm every target up, measure the interleaved rounds, summarize: the area's document."""
    if settings.only:
        targets = [t for t in targets if t.name in settings.only]
        names = {t.name for t in targets}
        comparisons = [c for c in comparisons if {c.target, c.reference} <= names]
    roots = {pid for pid in own_pids if pid} | {p for t in targets for p in t.charge.values()}

    def measure_one(target: Target, rnd: int, concurrency: int, attempt: int) -> Cell:
        return measure(
            target, rnd, concurrency, settings.seconds,
            attempt=attempt, roots=roots, threshold=settings.noise_threshold,
        )  # fmt: skip

    if settings.warmup > 0:
        for t in targets:
            if not t.warm:
                continue
            sys.stdout.write(f"warm-up {t.name}\n")
            # The lowest concurrency: connections and caches warm, without a backlog of slow
            # requests (64 batches of 1,000) that the first measurement would inherit.
            t.run(min(t.concurrencies or settings.concurrencies), settings.warmup)
    slots = schedule(targets, settings.concurrencies, settings.rounds)
    kept, discarded = run_slots(slots, targets, measure_one, max_redos=settings.max_redos)
    summary = summarize(kept)
    redone = {(c.round, c.concurrency) for c in discarded}
    compared = []
    for comp in comparisons:
        by_c: dict[int, dict[str, Any]] = {}
        for conc in sorted(set(summary[comp.target]) & set(summary[comp.reference])):
            ours = summary[comp.target][conc]["per_second"]["median"]
            ref = summary[comp.reference][conc]["per_second"]["median"]
            by_c[conc] = {
                "ratio": round(ours / ref, 3) if ref else 0.0,
                "per_round": [round(r, 3) for r in ratios(kept, comp.target, comp.reference, conc)],
            }
        compared.append({**comp.__dict__, "by_concurrency": by_c})
    levels = sorted({c for t in targets for c in (t.concurrencies or settings.concurrencies)})
    return {
        "area": area,
        "title": title,
        "date": today(),
        "commit": git_commit(),
        "machine": machine(),
        "command": " ".join(["uv run python", *sys.argv]),
        "database": describe(database),
        "method": {
            "rounds": settings.rounds,
            "seconds": settings.seconds,
            "warmup": settings.warmup,
            "concurrencies": levels,
            "noise_threshold": settings.noise_threshold,
            "max_redos": settings.max_redos,
            "smoke": settings.smoke,
        },
        "load": {
            "slots": len(slots),
            "redone_slots": len(redone),
            "cells": len(kept),
            "noisy_cells": sum(c.noisy for c in kept),
            "loadavg": {
                "min": min(c.loadavg for c in kept),
                "max": max(c.loadavg for c in kept),
            },
            "foreign_cores": {
                "median": round(statistics.median(c.foreign_cores for c in kept), 2),
                "max": round(max(c.foreign_cores for c in kept), 2),
            },
        },
        "summary": summary,
        "comparisons": compared,
        "cells": as_dicts(kept),
        "discarded_noisy_attempts": as_dicts(discarded),
        **(extra or {}),
    }


class Bench:
    """One area's run: its settings and, inside ``with``, its PostgreSQL server (``db``:
    ``AZORA_BENCH_DATABASE_URL`` or a private one, as ``--database`` asks) and the processes it
    starts (``procs``), stopped on the way out, processes first."""

    db: Database
    procs: Processes

    def __init__(self, args: argparse.Namespace) -> None:
        self.settings = settings_from(args)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Bench:
        with self._stack as stack:
            self.db = stack.enter_context(database_server(self.settings.database))
            self.procs = stack.enter_context(Processes())
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def database(self, name: str) -> str:
        """A new, empty database ``name`` on the server; its URL."""
        return recreate_database(self.db, name)

    def run(
        self,
        area: str,
        title: str,
        targets: Sequence[Target],
        comparisons: Sequence[Comparison],
        *,
        own_pids: Iterable[int | None] = (),
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """:func:`run` with this run's settings and database (its server among ``own_pids``)."""
        return run(
            area, title, targets, comparisons, self.settings,
            database=self.db, own_pids=[*own_pids, self.db.postmaster], extra=extra,
        )  # fmt: skip

    def finish(self, doc: dict[str, Any], *, notes: Sequence[str] = (), suffix: str = "") -> Path:
        return finish(doc, self.settings, notes=notes, suffix=suffix)


def describe(database: Database | None) -> dict[str, Any]:
    if database is None:
        return {"label": "none (no database in this benchmark)", "durable": None, "version": "-"}
    return {
        "label": database.label,
        "durable": database.durable,
        "version": database.version,
        "settings": database.settings,
    }


def finish(
    doc: dict[str, Any], settings: Settings, *, notes: Sequence[str] = (), suffix: str = ""
) -> Path:
    """Write bench/results/<area>-<date><suffix>.{md,json} (smoke runs elsewhere, marked)."""
    if doc["database"]["durable"] is False:
        suffix += "-fast-db"
    if settings.smoke:
        suffix += "-smoke"
    text = markdown(doc, notes)
    path = write(doc, text, settings.out, f"{doc['area']}-{doc['date'][:10]}{suffix}")
    sys.stdout.write(text + f"\nwritten: {path} (and .json)\n")
    return path


__all__ = [
    "Bench",
    "Comparison",
    "Database",
    "LoadResult",
    "Processes",
    "Service",
    "Settings",
    "Target",
    "add_arguments",
    "database_server",
    "finish",
    "free_port",
    "parser",
    "pgbench",
    "recreate_database",
    "run",
    "settings_from",
    "settle",
    "wrk",
    "wrk_script",
]
