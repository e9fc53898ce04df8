"""Child processes the harness starts: each in its own process group, all killed at the end.

Also reads what a server process costs from /proc: CPU time and resident memory of its tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1

_running: list[subprocess.Popen] = []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int, process: subprocess.Popen | None = None, timeout: float = 30.0
) -> None:
    """Return once 127.0.0.1:port accepts; fail early if ``process`` died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with code {process.returncode} before listening"
                ) from None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s"
                ) from None
            time.sleep(0.05)


def pinned(command: list[str], cpus: str | None) -> list[str]:
    """Prefix ``command`` with taskset when a CPU list is given and the machine has the cores."""
    if cpus and CORES > 1 and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *command]
    return command


def start(
    command: list[str],
    log: Path,
    env: dict | None = None,
    cwd: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = None,
) -> subprocess.Popen:
    """Start ``command`` in a new process group, output to ``log``; remembered for stop_all()."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout if stdout is not None else log_file,
            stderr=log_file,
            start_new_session=True,
        )
    _running.append(process)
    return process


def stop(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group; after ``grace`` seconds SIGKILL whatever is left of it."""
    if process in _running:
        _running.remove(process)
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        pass


def stop_all() -> None:
    """Stop every process started by start(), newest first."""
    for process in reversed(list(_running)):
        stop(process, grace=3.0)


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids``."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of one process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class CpuMeter:
    """CPU used by a set of process trees between start() and stop(), as % of one core."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots

    def _sample(self) -> float:
        return sum(cpu_seconds(tree(root)) for root in self.roots)

    def start(self) -> None:
        self.cpu0, self.wall0 = self._sample(), time.monotonic()

    def stop(self) -> float:
        return 100.0 * (self._sample() - self.cpu0) / max(1e-9, time.monotonic() - self.wall0)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (not idle or waiting on I/O)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


class MachineMeter(CpuMeter):
    """CPU used by the whole machine between start() and stop(), as % of one core: near
    100 x cores, the machine itself was the limit (servers, load generator and any other
    work together)."""

    def __init__(self) -> None:
        super().__init__([])

    def _sample(self) -> float:
        return machine_busy_seconds()
