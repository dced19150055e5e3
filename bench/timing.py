"""How long a benchmark's training runs took, across the invocations of a run that was killed and
resumed (read from its train.log), and the CPU time other virtual machines stole meanwhile."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from pneumoscan.run_folder import RunFolder

INVOCATION_START = "pneumoscan train:"  # the first log line of every invocation of train (a resume starts another)


def seconds_across_invocations(log_path: Path) -> float:
    """Time a killed and resumed run spent, from its train.log: each invocation's span (its start line to
    its last line), summed. What ran after an invocation's last line before a kill is not counted."""
    spans: list[list[datetime.datetime]] = []
    for line in log_path.read_text().splitlines():
        try:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue  # a continuation line (a traceback, a multi-line message)
        if INVOCATION_START in line or not spans:
            spans.append([stamp, stamp])
        spans[-1][1] = stamp
    return round(sum((end - start).total_seconds() for start, end in spans), 1)


def was_resumed(run_dir: Path) -> bool:
    """Whether a run was killed and resumed: flagged in its metrics, or more than one invocation in its log."""
    folder = RunFolder(run_dir)
    timings = json.loads(folder.metrics.read_text())["timings"]
    invocations = folder.log.read_text().count(INVOCATION_START) if folder.log.exists() else 1
    return bool(timings.get("resumed")) or invocations > 1


def training_seconds(run_dir: Path) -> float:
    """A finished run's training time: all its invocations when it was resumed after a kill."""
    folder = RunFolder(run_dir)
    timings = json.loads(folder.metrics.read_text())["timings"]
    if not was_resumed(run_dir):
        return timings["total_seconds"]
    return timings.get("seconds_all_invocations") or seconds_across_invocations(folder.log)


def cpu_times(stat: str | None = None) -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs since boot, from ``/proc/stat`` (or its text); None off Linux."""
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text()
        except OSError:
            return None
    fields = [int(v) for v in stat.splitlines()[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
    return fields[7], sum(fields)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None = None) -> float | None:
    """The share of CPU time the hypervisor gave to other guests between two ``cpu_times`` (to now by
    default): 0 on a machine of one's own; 0.4 means wall times ran about 1 / 0.6 = 1.7x slow."""
    after = cpu_times() if after is None else after
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)
