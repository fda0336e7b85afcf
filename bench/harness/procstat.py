"""CPU accounting from /proc: per process tree (the processes under test) and machine-wide
(what everything else on the shared machine used while a measurement ran).

A process tree's CPU is ``utime + stime`` of every live process in it plus ``cutime + cstime``
(children it has already reaped: PostgreSQL backends of a pgbench run end before the sample
after it). All values are clock ticks until ``account`` turns them into seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    ticks: int  # utime + stime + cutime + cstime


def parse_proc_stat(text: str) -> ProcStat:
    """One ``/proc/<pid>/stat`` line (the command name may hold spaces and parentheses)."""
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    # fields[0] is the state; ppid, then utime/stime/cutime/cstime at 11..14 (stat(5) 14..17).
    return ProcStat(
        pid=int(head.split("(", 1)[0]),
        ppid=int(fields[1]),
        ticks=sum(int(f) for f in fields[11:15]),
    )


def tree_ticks(stats: Mapping[int, ProcStat], root: int) -> int:
    """CPU ticks of ``root`` and all its descendants in one snapshot of the process table."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid].ticks
        todo.extend(children.get(pid, []))
    return total


def parse_cpu_busy(text: str) -> int:
    """Busy ticks of all CPUs from ``/proc/stat`` (everything but idle and iowait; guest time
    is already inside user time)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
            return user + nice + system + irq + softirq + steal
    raise ValueError("no aggregate cpu line in /proc/stat")


def snapshot_processes(proc: Path = Path("/proc")) -> dict[int, ProcStat]:
    stats = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = parse_proc_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # exited between the listing and the read
    return stats


@dataclass(frozen=True)
class Sample:
    """One point in time: machine busy ticks, each process tree's ticks, our own CPU."""

    wall: float
    busy_ticks: int
    trees: dict[int, int]  # root pid -> ticks of its tree
    own_seconds: float  # this (harness) process: user + system of all its threads
    loadavg: float


def take_sample(roots: Iterable[int]) -> Sample:
    stats = snapshot_processes()
    times = os.times()
    return Sample(
        wall=time.monotonic(),
        busy_ticks=parse_cpu_busy(Path("/proc/stat").read_text()),
        trees={pid: tree_ticks(stats, pid) for pid in set(roots)},
        own_seconds=times.user + times.system,
        loadavg=float(Path("/proc/loadavg").read_text().split()[0]),
    )


@dataclass(frozen=True)
class CpuAccount:
    wall_seconds: float
    trees: dict[int, float]  # root pid -> CPU seconds in the window
    client_seconds: float  # the load generator (wait4 of the child)
    own_seconds: float  # the harness itself
    busy_seconds: float  # the whole machine
    foreign_cores: float  # busy minus all of the above, as cores (1.0 = one core busy)
    loadavg: float  # 1-minute load average at the end of the window


def account(before: Sample, after: Sample, client_seconds: float) -> CpuAccount:
    """What each tree used between two samples, and the foreign CPU: the machine's busy time
    minus every process of the benchmark (all trees sampled, the load generator, ourselves).
    Trees must not nest (a pid inside another root's tree would be subtracted twice)."""
    wall = max(after.wall - before.wall, 1e-9)
    trees = {
        pid: (after.trees[pid] - before.trees.get(pid, after.trees[pid])) / CLK_TCK
        for pid in after.trees
    }
    own = after.own_seconds - before.own_seconds
    busy = (after.busy_ticks - before.busy_ticks) / CLK_TCK
    foreign = busy - sum(trees.values()) - client_seconds - own
    return CpuAccount(
        wall_seconds=wall,
        trees=trees,
        client_seconds=client_seconds,
        own_seconds=own,
        busy_seconds=busy,
        foreign_cores=max(foreign, 0.0) / wall,
        loadavg=after.loadavg,
    )


def quiesce(
    roots: Iterable[int], *, idle_cores: float = 0.05, window: float = 0.25, timeout: float = 180.0
) -> float:
    """Wait until the process trees are idle (together under ``idle_cores`` over a window):
    a load generator stops sending when its time is up, but the service may still be working
    through what was in flight (64 batches of 1,000 transfers), which must not land in the
    next measurement. Returns the seconds waited."""
    roots = set(roots)
    started = time.monotonic()
    previous = take_sample(roots)
    while time.monotonic() - started < timeout:
        time.sleep(window)
        current = take_sample(roots)
        used = sum(current.trees[p] - previous.trees.get(p, current.trees[p]) for p in roots)
        if used / CLK_TCK / (current.wall - previous.wall) < idle_cores:
            break
        previous = current
    return time.monotonic() - started
