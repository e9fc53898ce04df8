"""The workloads of the benchmark, each run against one system at a time.

Every function starts the server(s) it needs, drives the load generator, and returns a flat
dict of numbers. Sizes come from the Context (full run or --quick).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import procs
from harness.delayed import delay
from harness.loadgen import NativeEcho, Node, latency_ms, wrk
from harness.scaling import task_redis, ws_echo_redis
from harness.systems import Server

FULL = {
    "http": {"connections": 50, "seconds": 10, "warmup": 2},
    "http_db": {"connections": 50, "seconds": 10, "warmup": 2},
    "ws_echo": {"connections": 50, "seconds": 10, "warmup": 2},
    "ws_echo_auth": {"connections": 50, "seconds": 10, "warmup": 2},
    "ws_echo_deflate": {"connections": 50, "seconds": 10, "warmup": 2},
    "broadcast": {"sockets": 1000, "messages": 200, "deadline": 30},
    "broadcast_redis": {"sockets": 1000, "messages": 200, "deadline": 30},
    "ws_echo_redis": {"connections": 50, "seconds": 10, "warmup": 2},
    "task_redis": {"connections": 50, "seconds": 10, "warmup": 2, "deadline": 30},
    "idle": {"sockets": 10000},
    "longpoll": {"requests": 2000, "deadline": 30},
    "delay": {
        "messages": 100_000,
        "min_s": 1,
        "max_s": 10,
        "echo_connections": 20,
        "echo_pause_ms": 20,
        "idle_s": 5,
        "firing_s": 12,
        "deadline": 120,
    },
}
QUICK = {
    "http": {"connections": 10, "seconds": 1, "warmup": 0.3},
    "http_db": {"connections": 10, "seconds": 1, "warmup": 0.3},
    "ws_echo": {"connections": 10, "seconds": 1, "warmup": 0.3},
    "ws_echo_auth": {"connections": 10, "seconds": 1, "warmup": 0.3},
    "ws_echo_deflate": {"connections": 10, "seconds": 1, "warmup": 0.3},
    "broadcast": {"sockets": 50, "messages": 20, "deadline": 10},
    "broadcast_redis": {"sockets": 50, "messages": 20, "deadline": 10},
    "ws_echo_redis": {"connections": 10, "seconds": 1, "warmup": 0.3},
    "task_redis": {"connections": 10, "seconds": 1, "warmup": 1, "deadline": 10},
    "idle": {"sockets": 200},
    "longpoll": {"requests": 100, "deadline": 10},
    "delay": {
        "messages": 2000,
        "min_s": 0.5,
        "max_s": 2,
        "echo_connections": 5,
        "echo_pause_ms": 20,
        "idle_s": 1,
        "firing_s": 2,
        "deadline": 60,
    },
}
LOCAL_ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
#: Tries per socket when a server refuses a handshake (503 under a burst), like a reconnecting client.
OPEN_ATTEMPTS = 20


@dataclass
class Context:
    """Everything a workload needs besides the system's name."""

    sizes: dict
    logs: Path
    database: Path
    anchors: Path | None
    node: list[str]
    wrk: str | None
    native_echo: str | None
    server_cpus: str | None
    client_cpus: str | None
    redis_binary: str | None = None
    profile: Callable | None = None
    _redis: subprocess.Popen | None = field(default=None, repr=False)
    _redis_url: str = ""

    def server(self, system: str, **kwargs) -> Server:
        kwargs.setdefault("cpus", self.server_cpus)
        return Server(system, self.logs, self.anchors, self.database, **kwargs)

    def loadgen(self, cpus: str | None = "client") -> Node:
        return Node(self.node, self.logs, self.client_cpus if cpus == "client" else cpus)

    def echo_loadgen(self, cpus: str | None = "client") -> Node:
        """The C echo client (Node's echo mode, at a fraction of its CPU)."""
        if self.native_echo is None:
            raise RuntimeError("this workload needs the C echo client (bench/loadgen/wsecho.c)")
        return NativeEcho(
            [self.native_echo], self.logs, self.client_cpus if cpus == "client" else cpus
        )

    def redis_url(self) -> str:
        """A private redis-server on a free port, started on first use, flushed for every use."""
        if self._redis is None:
            if self.redis_binary is None:
                raise RuntimeError(
                    "redis-server is not on PATH: install it (apt-get install redis-server)"
                )
            port = procs.free_port()
            workdir = tempfile.mkdtemp(prefix="bench-redis-")
            self._redis = procs.start(
                [
                    self.redis_binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                    "--loglevel",
                    "warning",
                ],
                self.logs / "redis.log",
            )
            procs.wait_for_port(port, self._redis)
            self._redis_url = f"redis://127.0.0.1:{port}/0"
        cli = shutil.which("redis-cli")
        if cli:
            port = self._redis_url.rsplit(":", 1)[1].split("/")[0]
            subprocess.run([cli, "-p", port, "flushall"], stdout=subprocess.DEVNULL, check=False)
        return self._redis_url


def _measured(ctx: Context, server: Server, workload: str, run: Callable[[], dict]) -> dict:
    """Run ``run`` while metering the server's CPU (and profiling it when asked)."""
    meter = procs.CpuMeter([server.process.pid])
    meter.start()
    stop_profile = ctx.profile(server, workload) if ctx.profile else None
    try:
        result = run()
    finally:
        if stop_profile:
            stop_profile()
    result["server_cpu_pct"] = round(meter.stop())
    return result


def _http(ctx: Context, system: str, path: str, size: dict) -> dict:
    with ctx.server(system) as server:
        url = server.url(path)
        if ctx.wrk:
            wrk(
                ctx.wrk, url, size["connections"], max(1, size["warmup"]), ctx.client_cpus, ctx.logs
            )
            result = _measured(
                ctx,
                server,
                "http",
                lambda: wrk(
                    ctx.wrk, url, size["connections"], size["seconds"], ctx.client_cpus, ctx.logs
                ),
            )
            result["loadgen"] = "wrk"
            return result
        config = {
            "url": url,
            "connections": size["connections"],
            "workers": 2,
            "duration_s": size["seconds"],
            "warmup_s": size["warmup"],
        }
        out = _measured(
            ctx,
            server,
            "http",
            lambda: ctx.loadgen().run(
                "http", config, timeout=size["seconds"] + size["warmup"] + 60
            ),
        )
        ok = sum(v for k, v in out["statuses"].items() if k.startswith("2"))
        return {
            "rps": round(out["count"] / out["seconds"], 1),
            **latency_ms(out["hist"]),
            "non_2xx": out["count"] - ok,
            "errors": out["errors"],
            "loadgen": "node",
            "server_cpu_pct": out["server_cpu_pct"],
        }


def http_hello(ctx: Context, system: str) -> dict:
    return _http(ctx, system, "/hello/", ctx.sizes["http"])


def http_db(ctx: Context, system: str) -> dict:
    return _http(ctx, system, "/db/", ctx.sizes["http_db"])


def _echo(ctx: Context, system: str, workload: str, path: str, **extra) -> dict:
    """50 sockets, each sending 32 bytes and waiting for the answer (closed loop)."""
    size = ctx.sizes[workload]
    with ctx.server(system) as server:
        config = {
            "url": server.url(path, "ws"),
            "connections": size["connections"],
            "workers": 2,
            "duration_s": size["seconds"],
            "warmup_s": size["warmup"],
            "payload": 32,
            **extra,
        }
        out = _measured(
            ctx,
            server,
            workload,
            lambda: ctx.loadgen().run(
                "echo", config, timeout=size["seconds"] + size["warmup"] + 60
            ),
        )
    return {
        "rt_s": round(out["count"] / out["seconds"], 1),
        **latency_ms(out["hist"]),
        "opened": out["opened"],
        "errors": out["errors"] + out["failed"],
        "first_error": out["first_error"] or out.get("wrong_reply"),
        "server_cpu_pct": out["server_cpu_pct"],
    }


def ws_echo(ctx: Context, system: str) -> dict:
    return _echo(ctx, system, "ws_echo", "/echo/")


def ws_echo_deflate(ctx: Context, system: str) -> dict:
    """ws_echo with permessage-deflate: every message compressed both ways, as browsers do."""
    return _echo(ctx, system, "ws_echo_deflate", "/echo/", deflate=True)


def ws_echo_auth(ctx: Context, system: str) -> dict:
    """Each socket carries the session cookie of its own logged-in user (database sessions
    made by prepare_db.py) and is answered with that user's name."""
    logins = json.loads(Path(f"{ctx.database}.sessions.json").read_text())
    result = _echo(ctx, system, "ws_echo_auth", "/echo-auth/", logins=logins)
    if result["opened"] and result["errors"]:
        raise RuntimeError(f"{result['errors']} wrong or failed answers: {result['first_error']}")
    return result


def _broadcast_result(out: dict) -> dict:
    return {
        "deliveries_s": round(out["delivered"] / out["seconds"], 1) if out["seconds"] > 0 else 0.0,
        **latency_ms(out["hist"]),
        "lost": out["lost"],
        "lost_pct": round(100.0 * out["lost"] / out["expected"], 2) if out["expected"] else None,
        "delivered": out["delivered"],
        "sockets": out["opened"],
        "failed_sockets": out["failed"],
        "open_retries": out["retries"],
        "first_error": out["first_error"],
        "open_s": round(out["open_seconds"], 2),
    }


def broadcast(ctx: Context, system: str) -> dict:
    size = ctx.sizes["broadcast"]
    with ctx.server(system) as server:
        config = {
            "url": server.url("/broadcast/", "ws"),
            "send_url": server.url("/send/", "ws"),
            "connections": size["sockets"],
            "messages": size["messages"],
            "workers": 2,
            "deadline_s": size["deadline"],
            "quiet_s": 5,
            "local_addresses": LOCAL_ADDRESSES,
            "open_attempts": OPEN_ATTEMPTS,
        }
        out = _measured(
            ctx,
            server,
            "broadcast",
            lambda: ctx.loadgen().run("broadcast", config, timeout=size["deadline"] + 90),
        )
    result = _broadcast_result(out)
    result["server_cpu_pct"] = out["server_cpu_pct"]
    return result


def broadcast_redis(ctx: Context, system: str) -> dict:
    """Two server processes sharing one Redis; half the sockets on each, the sender on the
    first. uvicorn runs as one server with ``--workers 2`` (its own multi-process mode),
    which spreads the sockets and the sender over its workers itself."""
    size = ctx.sizes["broadcast_redis"]
    url = ctx.redis_url()
    if system == "uvicorn":
        with ctx.server(system, cpus=None, layer="redis", redis_url=url, workers=2) as server:
            return _broadcast_across(ctx, server, server, size)
    with (
        ctx.server(system, cpus=None, layer="redis", redis_url=url) as first,
        ctx.server(system, cpus=None, layer="redis", redis_url=url) as second,
    ):
        return _broadcast_across(ctx, first, second, size)


def _broadcast_across(ctx: Context, first: Server, second: Server, size: dict) -> dict:
    config = {
        "urls": [first.url("/broadcast/", "ws"), second.url("/broadcast/", "ws")],
        "send_url": first.url("/send/", "ws"),
        "connections": size["sockets"],
        "messages": size["messages"],
        "workers": 2,
        "deadline_s": size["deadline"],
        "quiet_s": 5,
        "local_addresses": LOCAL_ADDRESSES,
        "open_attempts": OPEN_ATTEMPTS,
    }
    meter = procs.CpuMeter(sorted({first.process.pid, second.process.pid}))
    meter.start()
    out = ctx.loadgen(cpus=None).run("broadcast", config, timeout=size["deadline"] + 90)
    cpu = meter.stop()
    result = _broadcast_result(out)
    result["servers_cpu_pct"] = round(cpu)
    return result


def idle(ctx: Context, system: str) -> dict:
    size = ctx.sizes["idle"]
    with ctx.server(system) as server:
        pid = server.serving_pid()
        before = procs.rss_bytes(pid)
        config = {
            "url": server.url("/idle/", "ws"),
            "connections": size["sockets"],
            "workers": 4,
            "open_concurrency": 64,
            "local_addresses": LOCAL_ADDRESSES,
            "open_attempts": OPEN_ATTEMPTS,
        }

        def measure(opened: dict) -> dict:
            after = procs.rss_bytes(pid)
            if not opened["opened"]:
                raise RuntimeError("no idle socket opened: {}".format(opened["first_error"]))
            count = opened["opened"]
            return {
                "rss_before_mb": round(before / 2**20, 1),
                "rss_after_mb": round(after / 2**20, 1),
                "kb_per_conn": round((after - before) / 1024 / count, 2),
            }

        out = ctx.loadgen().idle(config, timeout=300, while_open=measure)
    return {
        "kb_per_conn": out["kb_per_conn"],
        "open_s": round(out["open_seconds"], 2),
        "opened": out["opened"],
        "failed": out["failed"],
        "open_retries": out["retries"],
        "still_open": out["still_open"],
        "rss_before_mb": out["rss_before_mb"],
        "rss_after_mb": out["rss_after_mb"],
        "first_error": out["first_error"],
    }


def longpoll(ctx: Context, system: str) -> dict:
    size = ctx.sizes["longpoll"]
    with ctx.server(system) as server:
        config = {
            "url": server.url("/poll/"),
            "count_url": server.url("/poll-count/"),
            "fire_url": server.url("/fire/"),
            "requests": size["requests"],
            "workers": 2,
            "deadline_s": size["deadline"],
            "quiet_s": 5,
            "local_addresses": LOCAL_ADDRESSES,
            "open_attempts": OPEN_ATTEMPTS,
        }
        out = _measured(
            ctx,
            server,
            "longpoll",
            lambda: ctx.loadgen().run("longpoll", config, timeout=2 * size["deadline"] + 60),
        )
    seconds = out["seconds"]
    return {
        "answers_s": round(out["answered"] / seconds, 1) if seconds > 0 else 0.0,
        **latency_ms(out["hist"]),
        "park_s": round(out["park_seconds"], 2),
        "parked_seen": out["parked_seen"],
        "answered": out["answered"],
        "lost": out["lost"],
        "answered_before_fire": out["early"],
        "refused_retried": out["retries"],
        "statuses": out["statuses"],
        "errors": out["errors"],
        "first_error": out["first_error"],
        "server_cpu_pct": out["server_cpu_pct"],
    }


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    systems_key: str
    metric: str
    higher_is_better: bool
    columns: tuple
    run: Callable[[Context, str], dict]


WORKLOADS = [
    Workload(
        "http",
        "HTTP: small Django view, keep-alive",
        "http",
        "rps",
        True,
        (
            ("rps", "req/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("non_2xx", "non-2xx"),
            ("server_cpu_pct", "server CPU %"),
        ),
        http_hello,
    ),
    Workload(
        "http_db",
        "HTTP: Django view with one ORM query (SQLite)",
        "http_db",
        "rps",
        True,
        (
            ("rps", "req/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("non_2xx", "non-2xx"),
            ("server_cpu_pct", "server CPU %"),
        ),
        http_db,
    ),
    Workload(
        "ws_echo",
        "WebSocket echo through a routed sync consumer",
        "ws_echo",
        "rt_s",
        True,
        (
            ("rt_s", "round trips/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("errors", "errors"),
            ("server_cpu_pct", "server CPU %"),
        ),
        ws_echo,
    ),
    Workload(
        "ws_echo_auth",
        "WebSocket echo of the logged-in user's name (database sessions)",
        "ws_echo_auth",
        "rt_s",
        True,
        (
            ("rt_s", "round trips/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("errors", "errors"),
            ("server_cpu_pct", "server CPU %"),
        ),
        ws_echo_auth,
    ),
    Workload(
        "ws_echo_deflate",
        "WebSocket echo, compressed (permessage-deflate)",
        "ws_echo_deflate",
        "rt_s",
        True,
        (
            ("rt_s", "round trips/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("errors", "errors"),
            ("server_cpu_pct", "server CPU %"),
        ),
        ws_echo_deflate,
    ),
    Workload(
        "broadcast",
        "Broadcast: one group, one sender, one process",
        "broadcast",
        "deliveries_s",
        True,
        (
            ("deliveries_s", "deliveries/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("lost", "lost"),
            ("lost_pct", "lost %"),
            ("sockets", "sockets"),
            ("server_cpu_pct", "server CPU %"),
        ),
        broadcast,
    ),
    Workload(
        "broadcast_redis",
        "Broadcast across 2 processes sharing Redis",
        "broadcast_redis",
        "deliveries_s",
        True,
        (
            ("deliveries_s", "deliveries/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("lost", "lost"),
            ("lost_pct", "lost %"),
            ("sockets", "sockets"),
            ("servers_cpu_pct", "servers CPU %"),
        ),
        broadcast_redis,
    ),
    Workload(
        "ws_echo_redis",
        "WebSocket echo with several workers sharing Redis",
        "ws_echo_redis",
        "rt_s",
        True,
        (
            ("rt_s", "round trips/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("errors", "errors"),
            ("server_cpu_pct", "servers CPU %"),
            ("redis_cpu_pct", "Redis CPU %"),
            ("machine_cpu_pct", "machine CPU %"),
            ("cpu_us_per_rt", "servers CPU µs/round trip"),
        ),
        ws_echo_redis,
    ),
    Workload(
        "task_redis",
        "Tasks queued by a view on a named channel, run by any worker (Redis)",
        "task_redis",
        "tasks_s",
        True,
        (
            ("tasks_s", "tasks/s"),
            ("lost", "lost"),
            ("busiest_worker_pct", "busiest worker %"),
            ("rps", "req/s"),
            ("p50_ms", "p50 ms"),
            ("non_2xx", "non-2xx"),
            ("server_cpu_pct", "servers CPU %"),
            ("redis_cpu_pct", "Redis CPU %"),
            ("cpu_us_per_task", "servers CPU µs/task"),
        ),
        task_redis,
    ),
    Workload(
        "idle",
        "Idle WebSocket connections held by one process",
        "idle",
        "kb_per_conn",
        False,
        (
            ("kb_per_conn", "KB RSS/conn"),
            ("open_s", "open all (s)"),
            ("opened", "opened"),
            ("open_retries", "refused + retried"),
            ("still_open", "still open"),
            ("rss_after_mb", "RSS MB"),
        ),
        idle,
    ),
    Workload(
        "longpoll",
        "Long-poll: parked HTTP requests answered by one group message",
        "longpoll",
        "answers_s",
        True,
        (
            ("answers_s", "answers/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("lost", "lost"),
            ("park_s", "park all (s)"),
            ("refused_retried", "refused + retried"),
            ("server_cpu_pct", "server CPU %"),
        ),
        longpoll,
    ),
    Workload(
        "delay",
        "Delayed messages: 1-10 s delays on Redis, 2 processes, while serving echo",
        "delay",
        "late_p99_ms",
        False,
        (
            ("delivered", "delivered"),
            ("missing", "missing"),
            ("duplicates", "twice"),
            ("early", "early"),
            ("late_p50_ms", "late p50 ms"),
            ("late_p99_ms", "late p99 ms"),
            ("late_max_ms", "late max ms"),
            ("scheduled_per_s", "scheduled/s"),
            ("echo_idle_p99_ms", "echo p99 idle ms"),
            ("echo_firing_p99_ms", "echo p99 firing ms"),
            ("echo_p99_ratio", "echo p99 ratio"),
            ("servers_cpu_pct", "servers CPU %"),
        ),
        delay,
    ),
]
