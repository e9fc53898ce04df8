"""The delay workload: delayed messages on Redis, served by 2 server processes while they
also answer WebSocket echo traffic.

A sender process (delay_sender.py) schedules the messages (asgi.delay, random delays)
as fast as it can; both servers' delay services take them into Redis and deliver them to
``bench.delayed`` when due, where a consumer in either server notes how late each came
(benchsite/delays.py). Meanwhile the load generator runs a paced echo (each socket pauses
between messages, so the servers are not saturated by it) against the first server; its
p99 is compared with the same echo measured with nothing due (before and after; the lower
is the baseline). Only this project has delayed messages: there is no anchor.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
from typing import TYPE_CHECKING

from harness import environment, procs
from harness.loadgen import LoadgenError, latency_ms
from harness.systems import PROJECT

if TYPE_CHECKING:
    from harness.workloads import Context

FIRED_KEY = "bench:delay:fired"
RECORD = struct.Struct("<Id")


def delay(ctx: Context, system: str) -> dict:
    size = ctx.sizes["delay"]
    url = ctx.redis_url()
    with (
        ctx.server(PROJECT, cpus=None, layer="redis", redis_url=url) as first,
        ctx.server(PROJECT, cpus=None, layer="redis", redis_url=url) as second,
    ):
        echo = {
            "url": first.url("/echo/", "ws"),
            "connections": size["echo_connections"],
            "workers": 1,
            "warmup_s": 1,
            "payload": 32,
            "pause_ms": size["echo_pause_ms"],
        }
        idle = _echo(ctx, {**echo, "duration_s": size["idle_s"]})
        sender = procs.start(
            [
                str(environment.MAIN_PYTHON),
                str(environment.BENCH / "harness" / "delay_sender.py"),
                url,
                str(size["messages"]),
                str(size["min_s"]),
                str(size["max_s"]),
            ],
            ctx.logs / "delay-sender.log",
            env={**first.env, "PYTHONPATH": str(environment.ROOT)},
            stdout=subprocess.PIPE,
        )
        meter = procs.CpuMeter([first.process.pid, second.process.pid])
        meter.start()
        firing = _echo(ctx, {**echo, "duration_s": size["firing_s"]})
        out, _ = sender.communicate(timeout=size["deadline"])
        if sender.returncode != 0:
            raise RuntimeError(f"the delay sender failed; see {ctx.logs / 'delay-sender.log'}")
        sent = json.loads(out.decode().strip().splitlines()[-1])
        last_due = sent["started"] + sent["seconds"] + size["max_s"]
        arrivals = _arrivals(url, size["messages"], last_due)
        cpu = meter.stop()
        # The machine may be busy with other work: the quieter of two idle runs is the
        # baseline (the stricter comparison).
        after = _echo(ctx, {**echo, "duration_s": size["idle_s"]})
    idle = min(idle, after, key=lambda run: run["p99_ms"] or float("inf"))
    return _summary(size["messages"], sent, arrivals, idle, firing, cpu)


def _echo(ctx: Context, config: dict) -> dict:
    out = ctx.loadgen(cpus=None).run("echo", config, timeout=config["duration_s"] + 60)
    if out["errors"] or out["failed"]:
        raise LoadgenError(f"echo errors: {out['first_error'] or out.get('wrong_reply')}")
    return {"rt_s": round(out["count"] / out["seconds"], 1), **latency_ms(out["hist"])}


def _arrivals(url: str, expected: int, last_due: float) -> list[tuple[int, float]]:
    """(number, seconds late) of every arrival: once all came and nothing more came for a
    second (a duplicate would have), or once nothing came for 3 s past the last due time."""
    import redis

    client = redis.Redis.from_url(url)
    arrivals: list[tuple[int, float]] = []
    read = 0
    changed = time.time()
    while time.time() < last_due + 60:
        batches = client.lrange(FIRED_KEY, read, -1)
        read += len(batches)
        for batch in batches:
            arrivals.extend(RECORD.iter_unpack(batch))
        now = time.time()
        if batches:
            changed = now
        quiet = now - changed
        if (len(arrivals) >= expected and quiet > 1.0) or (now > last_due and quiet > 3.0):
            break
        time.sleep(0.1)
    return arrivals


def _summary(
    expected: int, sent: dict, arrivals: list, idle: dict, firing: dict, cpu: float
) -> dict:
    numbers = [n for n, _late in arrivals]
    unique = set(numbers)
    lateness = sorted(late for _n, late in arrivals)

    def late_ms(fraction: float) -> float | None:
        if not lateness:
            return None
        return round(1000 * lateness[min(len(lateness) - 1, int(fraction * len(lateness)))], 1)

    ratio = None
    if idle["p99_ms"] and firing["p99_ms"]:
        ratio = round(firing["p99_ms"] / idle["p99_ms"], 2)
    return {
        "delivered": len(unique),
        "missing": expected - len(unique),
        "duplicates": len(numbers) - len(unique),
        "early": sum(1 for late in lateness if late < 0),
        "late_p50_ms": late_ms(0.50),
        "late_p99_ms": late_ms(0.99),
        "late_max_ms": round(1000 * lateness[-1], 1) if lateness else None,
        "scheduled_per_s": round(sent["sent"] / sent["seconds"], 1),
        "asgi_delay_full": sent["full"],
        "echo_idle_p99_ms": idle["p99_ms"],
        "echo_firing_p99_ms": firing["p99_ms"],
        "echo_p99_ratio": ratio,
        "echo_firing_rt_s": firing["rt_s"],
        "servers_cpu_pct": round(cpu),
        "label": "geventchannels, 2 processes, Redis (this project)",
    }
