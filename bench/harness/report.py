"""One table per area with the reference beside it, as markdown and JSON, under a header
that says how the figures were taken (database durability, rounds, concurrency, machine,
date, commit)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Comparison:
    """A row of the area's table: ``target`` against ``reference`` at each concurrency both
    ran at; ``goal`` is the throughput ratio the issue asks for (None: no goal)."""

    label: str
    target: str
    reference: str
    goal: float | None = None


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "services", "bench")
    return commit + ("+uncommitted changes" if dirty else "")


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def fmt_spread(s: dict[str, float], digits: int = 1) -> str:
    """``median (min-max)``; just the median when there was one round."""
    if s["min"] == s["max"]:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}-{fmt(s['max'], digits)})"


def _cpu(entry: dict[str, Any]) -> str:
    parts = [
        f"{label} {fmt(s['median'])}"
        for label, s in entry["cpu_us_per_unit"].items()
        if label != "client"
    ]
    return ", ".join(parts) or "-"


def header(doc: dict[str, Any]) -> list[str]:
    m, s = doc["machine"], doc["method"]
    lines = [f"# {doc['title']}, {doc['date'][:10]}", ""]
    if s["smoke"]:
        lines += [
            "**SMOKE RUN** (a check that the benchmark runs end to end; not a result).",
            "",
        ]
    load = doc["load"]
    lines += [
        f"- Database: **{doc['database']['label']}**, PostgreSQL {doc['database']['version']}.",
        f"- Method: C load generators (wrk for HTTP, pgbench for SQL); {s['rounds']} interleaved "
        f"round(s), every target in each round, {s['seconds']:g} s per measurement after "
        f"{s['warmup']:g} s of warm-up; concurrency {', '.join(map(str, s['concurrencies']))}; "
        "figures are medians with the min-max over rounds.",
        f"- Noise: a round is noisy when foreign CPU (machine busy time minus every process of "
        f"the benchmark) exceeds {s['noise_threshold']:g} core; noisy rounds are redone up to "
        f"{s['max_redos']} time(s), the quietest attempt kept. Redone: {load['redone_slots']} of "
        f"{load['slots']} round slots; kept noisy: {load['noisy_cells']} of {load['cells']} "
        f"measurements. Load average {load['loadavg']['min']}-{load['loadavg']['max']}, foreign "
        f"CPU median {load['foreign_cores']['median']} (max {load['foreign_cores']['max']}) cores.",
        f"- Machine: {m['nproc']} CPUs, {m['model']}, Python {m['python']}, Linux {m['kernel']}.",
        f"- Date {doc['date']}, commit {doc['commit']}. Command: `{doc['command']}`.",
        "- CPU per unit: µs of CPU (user + system, /proc) of each charged process tree per "
        "request (per transfer for batches): `service` = the service's processes, `database` = "
        "PostgreSQL's postmaster and backends.",
    ]
    return lines


def comparison_table(doc: dict[str, Any]) -> list[str]:
    summary = doc["summary"]
    rows = [
        "| scenario | c | ours /s | reference /s | ratio (per-round range) | goal "
        "| ours p50 / p99 ms | reference p50 / p99 ms | ours CPU µs/unit | reference CPU µs/unit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for comp in doc["comparisons"]:
        for conc, row in sorted(comp["by_concurrency"].items(), key=lambda kv: int(kv[0])):
            ours = summary[comp["target"]][int(conc)]
            ref = summary[comp["reference"]][int(conc)]
            rng = row["per_round"]
            ratio = f"{row['ratio']:.2f}x"
            if rng and min(rng) != max(rng):
                ratio += f" ({min(rng):.2f}-{max(rng):.2f})"
            goal = f">= {comp['goal']:g}x" if comp["goal"] is not None else "-"
            rows.append(
                f"| {comp['label']} | {conc} | {fmt_spread(ours['per_second'])} "
                f"| {fmt_spread(ref['per_second'])} | {ratio} | {goal} "
                f"| {fmt(ours['p50_ms']['median'], 2)} / {fmt_spread(ours['p99_ms'], 2)} "
                f"| {fmt(ref['p50_ms']['median'], 2)} / {fmt_spread(ref['p99_ms'], 2)} "
                f"| {_cpu(ours)} | {_cpu(ref)} |"
            )
    return rows


def targets_table(doc: dict[str, Any]) -> list[str]:
    rows = [
        "| target | c | /s | p50 ms | p99 ms | CPU µs/unit | client CPU µs/unit "
        "| foreign cores | noisy rounds |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, by_c in doc["summary"].items():
        for conc in sorted(by_c, key=int):
            e = by_c[conc]
            client = e["cpu_us_per_unit"].get("client", {"median": 0.0})
            rows.append(
                f"| {name} | {conc} | {fmt_spread(e['per_second'])} "
                f"| {fmt_spread(e['p50_ms'], 2)} | {fmt_spread(e['p99_ms'], 2)} | {_cpu(e)} "
                f"| {fmt(client['median'])} | {fmt(e['foreign_cores']['median'], 2)} "
                f"| {e['noisy_rounds']}/{e['rounds']} |"
            )
    return rows


def markdown(doc: dict[str, Any], notes: Sequence[str] = ()) -> str:
    lines = header(doc)
    if doc["comparisons"]:
        lines += ["", "## Against the reference", "", *comparison_table(doc)]
    lines += ["", "## Every target", "", *targets_table(doc)]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write(doc: dict[str, Any], text: str, out_dir: Path, stem: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    path = out_dir / f"{stem}.md"
    path.write_text(text)
    return path


def today() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
