"""Drives the load generators: the Node one (bench/loadgen/loadgen.js), the C echo client
(bench/loadgen/wsecho.c) and wrk for HTTP."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from harness import procs


def percentile(hist: dict, fraction: float) -> float | None:
    """The value (µs) below which ``fraction`` of the histogram's samples fall."""
    items = sorted((float(k), v) for k, v in hist.items())
    total = sum(v for _, v in items)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for value, count in items:
        seen += count
        if seen >= rank:
            return value
    return items[-1][0]


def latency_ms(hist: dict) -> dict:
    """p50 and p99 of a microsecond histogram, in milliseconds."""
    out = {}
    for name, fraction in (("p50_ms", 0.50), ("p99_ms", 0.99)):
        value = percentile(hist, fraction)
        out[name] = None if value is None else round(value / 1000.0, 3)
    return out


class LoadgenError(RuntimeError):
    pass


class Node:
    """Runs one load-generator mode to completion in its own process group."""

    def __init__(self, command: list[str], logs: Path, cpus: str | None) -> None:
        self.command = command
        self.logs = logs
        self.cpus = cpus

    def _start(self, mode: str, config: dict, stdin=subprocess.DEVNULL) -> subprocess.Popen:
        command = procs.pinned([*self.command, mode, json.dumps(config)], self.cpus)
        return procs.start(
            command, self.logs / (f"loadgen-{mode}.log"), stdin=stdin, stdout=subprocess.PIPE
        )

    def run(self, mode: str, config: dict, timeout: float) -> dict:
        process = self._start(mode, config)
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LoadgenError(
                f"the {mode} load generator did not finish in {timeout:.0f} s"
            ) from None
        finally:
            procs.stop(process, grace=1.0)
        return self._result(mode, process, out)

    def _result(self, mode: str, process: subprocess.Popen, out: bytes) -> dict:
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise LoadgenError(
                "the {} load generator failed (exit {}); see {}".format(
                    mode, process.returncode, self.logs / (f"loadgen-{mode}.log")
                )
            )
        return json.loads(lines[-1])

    def idle(self, config: dict, timeout: float, while_open) -> dict:
        """Open the idle sockets, call ``while_open(open_event)`` while they are held, close them."""
        process = self._start("idle", config, stdin=subprocess.PIPE)
        try:
            line = _readline(process, timeout)
            if not line.startswith(b"{"):
                raise LoadgenError("the idle load generator stopped before opening its sockets")
            opened = json.loads(line)
            extra = while_open(opened)
            process.stdin.write(b"done\n")
            process.stdin.flush()
            out, _ = process.communicate(timeout=60)
            result = self._result("idle", process, out)
            result.update(extra)
            return result
        finally:
            procs.stop(process, grace=1.0)


class NativeEcho(Node):
    """The C echo client: the Node one's ``echo`` mode (plain text frames, no logins, no
    compression, no pauses) at a few microseconds of CPU per round trip instead of tens,
    for workloads whose servers share the cores with the load generator."""

    def _start(self, mode: str, config: dict, stdin=subprocess.DEVNULL) -> subprocess.Popen:
        unsupported = {"logins", "deflate", "pause_ms"} & set(config)
        if mode != "echo" or unsupported:
            raise LoadgenError(f"the C echo client does not do {mode} {sorted(unsupported)}")
        url = urlsplit(config["url"])
        arguments = [
            url.hostname or "127.0.0.1",
            str(url.port or 80),
            url.path or "/",
            str(config["connections"]),
            str(config.get("warmup_s", 0)),
            str(config["duration_s"]),
            str(config.get("payload", 32)),
        ]
        command = procs.pinned([*self.command, *arguments], self.cpus)
        return procs.start(command, self.logs / "loadgen-wsecho.log", stdout=subprocess.PIPE)


def _readline(process: subprocess.Popen, timeout: float) -> bytes:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise LoadgenError(f"the load generator said nothing in {timeout:.0f} s")
    return process.stdout.readline()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return round(float(number) * _UNITS[unit], 3)


def wrk(
    binary: str, url: str, connections: int, seconds: float, cpus: str | None, logs: Path
) -> dict:
    """Closed-loop keep-alive HTTP load with wrk; returns req/s, p50/p99 and errors."""
    command = procs.pinned(
        [
            binary,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "--timeout",
            "10s",
            url,
        ],
        cpus,
    )
    process = procs.start(command, logs / "wrk.log", stdout=subprocess.PIPE)
    try:
        out, _ = process.communicate(timeout=seconds + 30)
    finally:
        procs.stop(process, grace=1.0)
    text = out.decode()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if process.returncode != 0 or rate is None:
        raise LoadgenError(f"wrk failed on {url}:\n{text[-800:]}")
    latencies = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": float(rate.group(1)),
        "p50_ms": _ms(latencies["50"]) if "50" in latencies else None,
        "p99_ms": _ms(latencies["99"]) if "99" in latencies else None,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }
