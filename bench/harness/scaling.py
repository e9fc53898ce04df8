"""Workloads with several worker processes sharing one Redis: the production deployment.

``ws_echo_redis`` runs the echo workload on geventchannels under ``-w 1`` in memory, ``-w 1``
on Redis and ``-w 2`` on Redis (the project's row), and on Channels 4 + channels_redis under
``uvicorn --workers 2``. ``task_redis`` loads a view that queues a task on a named channel
and counts the tasks that the consumers of every worker ran. Neither is pinned: the
workers are meant to spread over both cores (the load generator shares them), so the
server CPU is what to read next to the rates. For the same reason the echo rows use the C
echo client (bench/loadgen/wsecho.c): the Node one spends more CPU per round trip than the
servers it loads (about 54 µs against 31-39 µs, measured here), and on shared cores that CPU
is taken from the workers being compared.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from harness import procs
from harness.loadgen import latency_ms, wrk
from harness.systems import PROJECT

if TYPE_CHECKING:
    from harness.systems import Server
    from harness.workloads import Context

#: The rows of ws_echo_redis besides each system's own: (row name, layer, workers).
ECHO_VARIANTS = {
    PROJECT: [
        ("geventchannels -w 1, in-memory", "memory", 1),
        ("geventchannels -w 1, Redis", "redis", 1),
    ],
}
ECHO_LABELS = {
    PROJECT: "geventchannels -w 2, Redis (this project)",
    "uvicorn": "Channels 4 + channels_redis, uvicorn --workers 2",
}


def _echo_once(ctx: Context, system: str, layer: str, workers: int) -> dict:
    size = ctx.sizes["ws_echo_redis"]
    url = ctx.redis_url() if layer == "redis" else ""
    with ctx.server(system, cpus=None, layer=layer, redis_url=url, workers=workers) as server:
        config = {
            "url": server.url("/echo/", "ws"),
            "connections": size["connections"],
            "workers": 2,
            "duration_s": size["seconds"],
            "warmup_s": size["warmup"],
            "payload": 32,
        }
        meter, redis_meter = procs.CpuMeter([server.process.pid]), _redis_meter(ctx, layer)
        machine = procs.MachineMeter()
        stop_profile = _profile(ctx, server, f"ws_echo_redis-w{workers}-{layer}")
        meter.start()
        redis_meter.start()
        machine.start()
        try:
            out = ctx.echo_loadgen(cpus=None).run(
                "echo", config, timeout=size["seconds"] + size["warmup"] + 60
            )
        finally:
            cpu, redis_cpu, machine_cpu = meter.stop(), redis_meter.stop(), machine.stop()
            if stop_profile:
                stop_profile()
    rate = out["count"] / out["seconds"]
    return {
        "rt_s": round(rate, 1),
        **latency_ms(out["hist"]),
        "errors": out["errors"] + out["failed"],
        "first_error": out["first_error"] or out.get("wrong_reply"),
        "opened": out["opened"],
        "server_cpu_pct": round(cpu),
        "redis_cpu_pct": round(redis_cpu) if layer == "redis" else None,
        "machine_cpu_pct": round(machine_cpu),
        # CPU seconds of the whole server (every worker) per round trip, in microseconds.
        "cpu_us_per_rt": round(cpu * 1e4 / rate, 1) if rate else None,
    }


def _redis_meter(ctx: Context, layer: str) -> procs.CpuMeter:
    """The CPU of the benchmark's redis-server (nothing to meter on the in-memory layer)."""
    return procs.CpuMeter([ctx._redis.pid] if layer == "redis" and ctx._redis else [])


def _profile(ctx: Context, server: Server, name: str):
    if ctx.profile is None or server.system != PROJECT:
        return None
    return ctx.profile(server, name)


def ws_echo_redis(ctx: Context, system: str) -> dict:
    """The project's -w 2 on Redis, with its -w 1 rows next to it; uvicorn -w 2."""
    result = _echo_once(ctx, system, "redis", 2)
    result["label"] = ECHO_LABELS.get(system, system)
    rows = {}
    for name, layer, workers in ECHO_VARIANTS.get(system, []):
        rows[name] = _echo_once(ctx, system, layer, workers)
    if rows:
        result["rows"] = rows
    return result


# -- tasks -----------------------------------------------------------------------------


def _counters(url: str) -> tuple[int, dict[str, int]]:
    """Tasks queued, and tasks run per worker pid, as the benchsite counted them."""
    import redis

    client = redis.Redis.from_url(url)
    sent = int(client.get("bench:sent") or 0)
    done = {
        key.decode().rpartition(":")[2]: int(client.get(key) or 0)
        for key in client.scan_iter(match="bench:done:*")
    }
    return sent, done


def _settle(url: str, quiet: float, deadline: float) -> tuple[int, dict[str, int]]:
    """The counters once they have not moved for ``quiet`` seconds (or at ``deadline``)."""
    last = _counters(url)
    changed = time.monotonic()
    while time.monotonic() - changed < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = _counters(url)
        if now != last:
            last, changed = now, time.monotonic()
    return last


def _tasks_once(ctx: Context, workers: int) -> dict:
    size = ctx.sizes["task_redis"]
    url = ctx.redis_url()
    if not ctx.wrk:
        raise RuntimeError("task_redis needs wrk")
    with ctx.server(PROJECT, cpus=None, layer="redis", redis_url=url, workers=workers) as server:
        target = server.url("/task/")
        wrk(ctx.wrk, target, size["connections"], max(1, size["warmup"]), None, ctx.logs)
        sent0, done0 = _settle(url, 1.0, time.monotonic() + 30)
        meter, redis_meter = procs.CpuMeter([server.process.pid]), _redis_meter(ctx, "redis")
        stop_profile = _profile(ctx, server, f"task_redis-w{workers}")
        meter.start()
        redis_meter.start()
        try:
            http = wrk(ctx.wrk, target, size["connections"], size["seconds"], None, ctx.logs)
        finally:
            cpu, redis_cpu = meter.stop(), redis_meter.stop()
            if stop_profile:
                stop_profile()
        sent1, done1 = _settle(url, 1.5, time.monotonic() + size["deadline"])
    sent = sent1 - sent0
    by_worker = {pid: done1.get(pid, 0) - done0.get(pid, 0) for pid in done1}
    done = sum(by_worker.values())
    seconds = size["seconds"]
    return {
        "tasks_s": round(done / seconds, 1),
        "lost": sent - done,
        "sent": sent,
        "done": done,
        "busiest_worker_pct": round(100.0 * max(by_worker.values()) / done) if done else None,
        "workers_seen": len([n for n in by_worker.values() if n]),
        "rps": http["rps"],
        "p50_ms": http["p50_ms"],
        "p99_ms": http["p99_ms"],
        "non_2xx": http["non_2xx"],
        "server_cpu_pct": round(cpu),
        "redis_cpu_pct": round(redis_cpu),
        "cpu_us_per_task": round(cpu * 1e4 * seconds / done, 1) if done else None,
    }


def task_redis(ctx: Context, system: str) -> dict:
    """A view queues Channel("bench.tasks").send(...); consumers of any worker run it."""
    result = _tasks_once(ctx, 2)
    result["label"] = "geventchannels -w 2, Redis (this project)"
    result["rows"] = {"geventchannels -w 1, Redis": _tasks_once(ctx, 1)}
    return result
