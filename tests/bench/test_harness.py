"""The pure parts of the shared bench method (bench/harness): output parsing, interleaving,
noisy-round handling and CPU accounting. No processes, no network."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.harness.loadgen import (
    nearest_rank,
    parse_pgbench_log,
    parse_pgbench_summary,
    parse_wrk_output,
    pgbench_result,
    wrk_result,
    wrk_script,
)
from bench.harness.procstat import (
    CLK_TCK,
    ProcStat,
    Sample,
    account,
    parse_cpu_busy,
    parse_proc_stat,
    tree_ticks,
)
from bench.harness.rounds import Cell, Target, is_noisy, ratios, run_slots, schedule, summarize

WRK_OUT = """Running 3s test @ http://127.0.0.1:8000/v1/quotes
  2 threads and 16 connections
  9000 requests in 3.00s, 1.2MB read
WRK_RESULT {"requests": 9000, "duration_us": 3000000, "errors_status": 12, "errors_socket": 1, \
"statuses": {"201": 8988, "409": 12}, "p50_us": 1500, "p90_us": 2500, "p99_us": 9000, \
"p999_us": 15000, "max_us": 20000}
"""

PGBENCH_OUT = """pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: script.sql
scaling factor: 1
query mode: prepared
number of clients: 16
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 12000
number of failed transactions: 0 (0.000%)
latency average = 3.981 ms
initial connection time = 20.422 ms
tps = 4000.000000 (without initial connection time)
"""


def test_wrk_output_parsed_to_milliseconds_and_expected_statuses_are_not_errors() -> None:
    raw = parse_wrk_output(WRK_OUT)
    result = wrk_result(raw, client_seconds=0.5, ok=[409])
    assert result.requests == 9000
    assert result.seconds == 3.0
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (1.5, 2.5, 9.0)
    assert (result.p999_ms, result.max_ms) == (15.0, 20.0)
    assert result.statuses == {201: 8988, 409: 12}
    assert result.errors == 1  # the socket error; the twelve 409s were expected
    assert wrk_result(raw, client_seconds=0.5).errors == 13


def test_wrk_output_without_the_result_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="WRK_RESULT"):
        parse_wrk_output("Running 3s test\nunable to connect\n")


def test_wrk_script_appends_the_epilogue_and_counts_statuses_only_when_asked() -> None:
    plain = wrk_script('wrk.method = "POST"\n')
    assert plain.startswith('wrk.method = "POST"')
    assert "function done(" in plain
    assert "function response(" not in plain
    assert "function response(" in wrk_script("", count_statuses=True)


def test_pgbench_log_and_summary() -> None:
    lines = [
        "0 0 1200 0 1700000000 100",
        "1 0 800 0 1700000000 200",
        "0 1 failed 0 1700000000 300",
        "1 1 30000 0 1700000000 400",
        "",
    ]
    latencies, failed = parse_pgbench_log(lines)
    assert latencies == [1200, 800, 30000]
    assert failed == 1
    summary = parse_pgbench_summary(PGBENCH_OUT)
    assert summary == {"processed": 12000, "failed": 0, "tps": 4000.0}
    result = pgbench_result(summary, latencies, client=0.25)
    assert result.seconds == 3.0
    assert result.per_second == 4000.0
    assert result.p50_ms == 1.2
    assert result.p99_ms == 30.0
    assert result.max_ms == 30.0


def test_pgbench_output_without_tps_is_an_error() -> None:
    with pytest.raises(ValueError, match="pgbench"):
        parse_pgbench_summary("connection to server failed\n")


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert nearest_rank(values, 50) == 50
    assert nearest_rank(values, 99) == 99
    assert nearest_rank(values, 99.9) == 100
    assert nearest_rank([7], 99) == 7
    assert nearest_rank([], 50) == 0.0


def _target(name: str, concurrencies: tuple[int, ...] | None = None) -> Target:
    def never(concurrency: int, seconds: float) -> object:
        raise AssertionError("not run in these tests")

    return Target(name, never, concurrencies=concurrencies)  # type: ignore[arg-type]


def test_schedule_puts_every_target_in_every_round_and_rotates_the_order() -> None:
    targets = [_target("service"), _target("reference"), _target("batch", (4, 16, 64))]
    slots = schedule(targets, (16, 64), rounds=3)
    assert [(s.round, s.concurrency) for s in slots] == [
        (r, c) for r in range(3) for c in (4, 16, 64)
    ]
    for s in slots:
        expected = {"batch"} if s.concurrency == 4 else {"service", "reference", "batch"}
        assert set(s.targets) == expected
    at16 = [s.targets for s in slots if s.concurrency == 16]
    assert [order[0] for order in at16] == ["service", "reference", "batch"]


def _cell(target: str, rnd: int, foreign: float, per_second: float = 100.0, **kw: object) -> Cell:
    return Cell(
        target=target, round=rnd, concurrency=16, attempt=0, requests=100, units=100,
        seconds=1.0, per_second=per_second, p50_ms=1.0, p90_ms=2.0, p99_ms=3.0, p999_ms=4.0,
        max_ms=5.0, errors=0, cpu_us_per_unit={"service": 100.0}, foreign_cores=foreign,
        loadavg=1.0, noisy=is_noisy(foreign, 0.1), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_noisy_means_more_foreign_cpu_than_the_threshold() -> None:
    assert not is_noisy(0.05, 0.1)
    assert not is_noisy(0.1, 0.1)
    assert is_noisy(0.11, 0.1)


def test_a_noisy_slot_is_redone_whole_and_the_quietest_attempt_kept() -> None:
    targets = [_target("a"), _target("b")]
    slots = schedule(targets, (16,), rounds=2)
    # round 0: b noisy on the first attempt, quiet on the second; round 1: always noisy.
    foreign = {(0, "a", 0): 0.0, (0, "b", 0): 0.5, (0, "a", 1): 0.02, (0, "b", 1): 0.03}
    calls = []

    def measure(t: Target, rnd: int, conc: int, attempt: int) -> Cell:
        calls.append((rnd, t.name, attempt))
        f = foreign.get((rnd, t.name, attempt), 0.3 + 0.1 * attempt)
        return replace(_cell(t.name, rnd, f), attempt=attempt, concurrency=conc)

    kept, discarded = run_slots(slots, targets, measure, max_redos=2)
    assert calls[:4] == [(0, "a", 0), (0, "b", 0), (0, "a", 1), (0, "b", 1)]
    assert len([c for c in calls if c[0] == 1]) == 6  # round 1: 1 + 2 redos, both targets
    assert {(c.round, c.target, c.attempt) for c in kept} == {
        (0, "a", 1), (0, "b", 1), (1, "a", 0), (1, "b", 0)
    }  # fmt: skip
    assert [c for c in kept if c.round == 1 and c.noisy]  # still noisy after the redos: recorded
    assert len(discarded) == 2 + 4


def test_summary_medians_spreads_and_per_round_ratios() -> None:
    cells = [
        _cell("ours", 0, 0.0, per_second=300.0),
        _cell("ours", 1, 0.0, per_second=100.0),
        _cell("ours", 2, 0.2, per_second=200.0),
        _cell("ref", 0, 0.0, per_second=100.0),
        _cell("ref", 1, 0.0, per_second=100.0),
        _cell("ref", 2, 0.0, per_second=50.0),
    ]
    summary = summarize(cells)
    assert summary["ours"][16]["per_second"] == {"median": 200.0, "min": 100.0, "max": 300.0}
    assert summary["ours"][16]["noisy_rounds"] == 1
    assert summary["ours"][16]["cpu_us_per_unit"]["service"]["median"] == 100.0
    assert ratios(cells, "ours", "ref", 16) == [3.0, 1.0, 4.0]


def test_proc_stat_line_with_spaces_and_parentheses_in_the_name() -> None:
    fields = ["S", "41"] + ["0"] * 9 + ["150", "50", "30", "20"] + ["0"] * 30
    stat = parse_proc_stat("1234 (postgres: x (y)) " + " ".join(fields))
    assert stat == ProcStat(pid=1234, ppid=41, ticks=250)


def test_tree_ticks_sum_a_process_and_its_descendants_only() -> None:
    stats = {
        1: ProcStat(1, 0, 1000),
        10: ProcStat(10, 1, 5),  # the postmaster
        11: ProcStat(11, 10, 7),  # a backend
        12: ProcStat(12, 11, 3),  # its child
        20: ProcStat(20, 1, 100),  # not ours
    }
    assert tree_ticks(stats, 10) == 15
    assert tree_ticks(stats, 99) == 0


def test_cpu_busy_excludes_idle_and_iowait() -> None:
    text = "cpu  100 10 50 9000 70 5 5 2 0 0\ncpu0 50 5 25 4500 35 2 2 1 0 0\n"
    assert parse_cpu_busy(text) == 100 + 10 + 50 + 5 + 5 + 2


def test_account_charges_trees_and_leaves_the_rest_as_foreign_cpu() -> None:
    t = CLK_TCK
    before = Sample(wall=0.0, busy_ticks=0, trees={10: 0, 20: 0}, own_seconds=1.0, loadavg=0.5)
    after = Sample(
        wall=2.0, busy_ticks=3 * t, trees={10: t, 20: t // 2}, own_seconds=1.1, loadavg=0.7
    )
    cpu = account(before, after, client_seconds=0.4)
    assert cpu.trees == {10: 1.0, 20: 0.5}
    assert cpu.busy_seconds == 3.0
    # 3.0 busy - 1.5 trees - 0.4 client - 0.1 ourselves = 1.0 s over 2 s of wall time
    assert cpu.foreign_cores == pytest.approx(0.5)
    assert cpu.loadavg == 0.7
