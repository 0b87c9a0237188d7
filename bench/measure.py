"""Measuring tools without servers: the machine, a process's memory and CPU, percentiles."""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    cpus: int
    cpu_model: str
    memory_gib: float

    @classmethod
    def here(cls) -> Machine:
        model = "unknown"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        return cls(os.cpu_count() or 1, model, _meminfo_kib("MemTotal") / 2**20)

    def describe(self) -> str:
        return f"{self.cpus} CPUs ({self.cpu_model}), {self.memory_gib:.1f} GiB memory"


def _meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def reference_seconds() -> float:
    """Wall time of a fixed single-threaded workload (JSON and SHA-256 of a list of small
    objects, the kind of work the operator's stack does per host), the best of three tries, in
    a fresh interpreter (no thread of the bench's own competes for it), once the machine is
    quiet (:func:`wait_quiet`).

    A yardstick of this machine's speed at one moment: the shared machines of this kind ran the
    same work 25-45 % slower within an hour, so a figure is compared with another run's only
    after comparing their yardsticks."""
    wait_quiet()
    command = [sys.executable, "-m", "bench.measure"]
    root = Path(__file__).resolve().parent.parent
    finished = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
    return float(finished.stdout)


def _reference_workload(tries: int = 3) -> float:
    payload = [{"name": f"host-{i}", "serial": i * 7919, "ready": i % 2 == 0} for i in range(2000)]
    best = math.inf
    for _ in range(tries):
        started = time.perf_counter()
        for _ in range(250):
            text = json.dumps(payload)
            json.loads(text)
            hashlib.sha256(text.encode() * 4).digest()
        best = min(best, time.perf_counter() - started)
    return best


def wait_quiet(*, busy_below: float = 0.1, timeout: float = 60) -> float:
    """Wait until the machine's CPUs were less than ``busy_below`` busy over a second (servers
    a run stopped may still be exiting); returns the last second's busy fraction."""
    deadline = time.monotonic() + timeout
    while True:
        before = _cpu_ticks()
        time.sleep(1)
        after = _cpu_ticks()
        total = sum(after) - sum(before)
        busy = 1 - (after[3] + after[4] - before[3] - before[4]) / total if total else 0.0
        if busy < busy_below or time.monotonic() > deadline:
            return busy


def _cpu_ticks() -> list[int]:
    """The first line of ``/proc/stat``: user nice system idle iowait irq softirq steal. Not the
    guest columns after them, which count time already counted in user and nice."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    return [int(field) for field in fields]


def stolen_cpu_seconds() -> float:
    """CPU seconds the hypervisor has run other guests on this machine's CPUs so far (the
    ``steal`` column of ``/proc/stat``, all CPUs): over a window, the time our processes wanted
    a CPU that was not ours to have."""
    ticks = _cpu_ticks()
    return ticks[7] / os.sysconf("SC_CLK_TCK") if len(ticks) > 7 else 0.0


MIB_IN_MB = 2**20 / 10**6
"""A MiB (what /proc reports) is this many MB (what the targets name)."""


def rss_mib(pid: int) -> tuple[float, float]:
    """Resident memory of ``pid`` now and at its peak (VmRSS, VmHWM), in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak_rss(pid: int) -> None:
    """Start ``pid``'s peak (VmHWM) again from its current resident memory, so that the peak
    read later is that of what happened in between (Linux >= 4.0, our own processes)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(frozen=True)
class ProcessGroupMemory:
    """A master process and its children (nginx and its workers), in MiB."""

    master_rss: float
    children_rss: float
    children: int
    pss: float
    """Proportional set size of them all: shared pages counted once, unlike the RSS sum."""

    def describe(self) -> str:
        return (
            f"RSS master {self.master_rss:.0f} + {self.children} workers "
            f"{self.children_rss:.0f} MiB (PSS of all {self.pss:.0f} MiB)"
        )


def group_memory(master: int, children: set[int]) -> ProcessGroupMemory:
    """Resident memory of ``master`` and of ``children``; a child gone meanwhile is skipped."""
    rss, pss, counted = 0.0, 0.0, 0
    for pid in children:
        try:
            rss += rss_mib(pid)[0]
            pss += _pss_mib(pid)
            counted += 1
        except (OSError, KeyError):
            continue
    return ProcessGroupMemory(rss_mib(master)[0], rss, counted, pss + _pss_mib(master))


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time ``pid`` has used so far (its threads included), and with
    ``reaped_children`` that of the children it has waited for (the agent's ``nginx -t`` runs,
    the nginx master's retired workers)."""
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, *, timeout: float = 90, quiet: float = 3, threshold: float = 0.05) -> float:
    """Wait until ``pid`` used under ``threshold`` CPU-seconds per second for ``quiet`` seconds
    in a row; returns the seconds waited."""
    started = time.monotonic()
    calm_since = None
    previous = cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        current = cpu_seconds(pid)
        if (current - previous) / 0.5 < threshold:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= quiet:
                break
        else:
            calm_since = None
        previous = current
    return time.monotonic() - started


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _process_name(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [word.decode(errors="replace") for word in argv if word]
    if words and words[0].startswith("nginx:"):  # nginx rewrites its command line
        return "nginx"
    if "vhost_operator" in words:  # python -m vhost_operator <command>
        return f"vhost-operator {words[words.index('vhost_operator') + 1]}"
    return Path(words[0]).name.removesuffix(":") if words else "?"


def descendants_cpu() -> dict[str, float]:
    """CPU seconds used so far by every process this one started (and theirs: nginx workers),
    summed by program name (``kube-apiserver``, ``vhost-operator run``, ``nginx``, ...). A
    program's figure includes the children it reaped (the agent's includes its ``nginx -t``
    runs); processes that have exited are not counted: take differences over a window."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    ours: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - ours
        ours |= frontier
    usage: dict[str, float] = {}
    for pid in ours:
        try:
            name = _process_name(pid)
            used = cpu_seconds(pid, reaped_children=True)
        except (OSError, IndexError, ValueError):
            continue
        usage[name] = usage.get(name, 0.0) + used
    return usage


def cpu_used_since(before: dict[str, float]) -> dict[str, float]:
    """CPU seconds per program since ``before`` (a :func:`descendants_cpu`), largest first."""
    now = descendants_cpu()
    spent = {name: now[name] - before.get(name, 0.0) for name in now}
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class Latencies:
    """Latency samples in seconds."""

    samples: tuple[float, ...]

    def percentile(self, p: int) -> float:
        if len(self.samples) == 1:
            return self.samples[0]
        return statistics.quantiles(self.samples, n=100, method="inclusive")[p - 1]

    @property
    def p50_ms(self) -> float:
        return 1000 * self.percentile(50)

    @property
    def p99_ms(self) -> float:
        return 1000 * self.percentile(99)

    @property
    def max_ms(self) -> float:
        return 1000 * max(self.samples)

    def describe(self) -> str:
        return (
            f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, max {self.max_ms:.2f} ms "
            f"({len(self.samples)} requests)"
        )


def at_fixed_rate(rate: float, seconds: float, call: Callable[[int], None]) -> Latencies:
    """Call ``call(i)`` ``rate`` times a second for ``seconds``, one after another; each latency
    is measured from the moment the request was *due*, so a slow answer that delays the next
    request counts against that one too (no coordinated omission)."""
    count = max(1, round(rate * seconds))
    samples = []
    started = time.perf_counter()
    for number in range(count):
        due = started + number / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        call(number)
        samples.append(time.perf_counter() - due)
    return Latencies(tuple(samples))


def sequential(count: int, call: Callable[[int], None]) -> Latencies:
    """Call ``call(i)`` ``count`` times back to back; the latency of each call."""
    samples = []
    for number in range(count):
        started = time.perf_counter()
        call(number)
        samples.append(time.perf_counter() - started)
    return Latencies(tuple(samples))


if __name__ == "__main__":  # what reference_seconds() runs
    print(f"{_reference_workload():.6f}")
