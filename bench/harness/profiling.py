"""py-spy profiles of this project's server while a workload runs (run.py --profile)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

from harness import procs
from harness.systems import PROJECT

PROFILED = {"ws_echo", "broadcast", "http", "ws_echo_redis", "task_redis"}


def profiler(py_spy: Path, out: Path, logs: Path):
    """A Context.profile hook: records the project's serving process with py-spy."""

    def start(server, workload: str):
        """``workload`` may name a configuration after a dash (``ws_echo_redis-w2-redis``);
        a server of several workers is recorded whole (every worker process)."""
        if server.system != PROJECT or workload.split("-")[0] not in PROFILED:
            return None
        raw = out / (f"profile-{workload}.txt")
        several = getattr(server, "workers", 1) > 1
        target = server.process.pid if several else server.serving_pid()
        process = procs.start(
            [
                str(py_spy),
                "record",
                *(["--subprocesses"] if several else []),
                "--pid",
                str(target),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--rate",
                "250",
                "--nonblocking",
                "--nolineno",
            ],
            logs / "py-spy.log",
        )

        def stop() -> None:
            try:
                os.kill(process.pid, signal.SIGINT)
                process.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            procs.stop(process, grace=1.0)
            if raw.exists():
                summarize(raw, out / (f"profile-{workload}-top.txt"))

        return stop

    return start


def summarize(raw: Path, summary: Path, top: int = 25) -> None:
    """Top functions by own samples and by inclusive samples, from py-spy's collapsed stacks."""
    own, inclusive, total = Counter(), Counter(), 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples (idle excluded)", "", "own time:"]
    lines += [f"{100.0 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"{100.0 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    summary.write_text("\n".join(lines) + "\n")
