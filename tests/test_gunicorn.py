"""gunicorn -k geventchannels.gunicorn.Worker with the project's plain WSGI module: HTTP
and WebSockets, reload / max-requests / stop close codes, the heartbeat while only
WebSockets are open, several workers sharing Redis, and the in-memory warning."""

from __future__ import annotations

import signal
import socket
import time

import pytest
import websocket

from .conftest import free_port
from .runmodes.process import (
    ServerProcess,
    gunicorn,
    http_get,
    http_json,
    ws_close_code,
    ws_connect,
    ws_echo,
)

IN_MEMORY_WARNING = "Group and Channel messages will not cross workers"


def worker_pid(port: int, other_than: int | None = None):
    """The pid of the worker answering HTTP now (None while it is the old one)."""
    try:
        info = http_json(port, "/patched/")
    except (OSError, AssertionError, ValueError):
        return None
    assert info["socket"] and info["threading"], info
    return None if info["pid"] == other_than else info["pid"]


@pytest.mark.timeout(90)
def test_one_worker_serves_and_closes_sockets_with_the_right_code():
    port = free_port()
    command = gunicorn(port, "-w", "1", "--timeout", "2", "--max-requests", "4")
    with ServerProcess(command, port) as server:
        server.wait_listening()
        first = server.wait_until(lambda: worker_pid(port), what="a patched worker")
        assert http_get(port, "/hello/") == (200, f"hello from {first}".encode())
        ws = ws_connect(port)
        assert ws_echo(ws, "one")["consumer_pid"] == first

        # Only a WebSocket is open for longer than --timeout: the heartbeat goes on, the
        # arbiter does not kill the worker. The wait is the duration under test.
        time.sleep(3)
        assert ws_echo(ws, "still here")["consumer_pid"] == first
        assert "WORKER TIMEOUT" not in server.output

        # HUP: new worker, the old one's sockets are told "service restart".
        server.send_signal(signal.SIGHUP)
        assert ws_close_code(ws) == 1012
        second = server.wait_until(lambda: worker_pid(port, first), what="the reloaded worker")

        # --max-requests 4: the worker leaves after 4 HTTP requests, also with 1012.
        ws = ws_connect(port)
        assert ws_echo(ws, "two")["consumer_pid"] == second
        for _ in range(3):
            http_get(port, "/hello/")
        assert ws_close_code(ws) == 1012
        third = server.wait_until(lambda: worker_pid(port, second), what="the replacement worker")

        # TERM: going away.
        ws = ws_connect(port)
        assert ws_echo(ws, "three")["consumer_pid"] == third
        server.send_signal(signal.SIGTERM)
        assert ws_close_code(ws) == 1001
        assert server.exit_code() == 0
        assert IN_MEMORY_WARNING not in server.output


@pytest.mark.redis
@pytest.mark.timeout(90)
def test_three_workers_on_redis_deliver_a_group_message_to_sockets_on_every_worker(redis_url):
    port = free_port()
    command = gunicorn(port, "-w", "3", "--reuse-port")
    with ServerProcess(command, port, {"RM_REDIS_URL": redis_url}) as server:
        server.wait_listening()
        sockets_by_server: dict[str, list] = {}
        opened = []
        deadline = time.monotonic() + 40
        # With --reuse-port the kernel spreads connections over the workers' own listeners.
        while len(sockets_by_server) < 3:
            assert len(opened) < 60 and time.monotonic() < deadline, (
                f"sockets reached only {len(sockets_by_server)} workers; output:\n{server.output}"
            )
            try:
                ws = ws_connect(port)
            except OSError:
                continue  # a worker still booting
            opened.append(ws)
            sockets_by_server.setdefault(ws_echo(ws, "where")["server"], []).append(ws)

        opened[0].send("broadcast:to everyone")
        for ws in opened:
            ws.settimeout(15)
            assert ws.recv() == "broadcast:to everyone"
        for ws in opened:
            ws.close()
        assert IN_MEMORY_WARNING not in server.output
        assert server.stop() == 0


@pytest.mark.timeout(60)
def test_several_workers_on_the_in_memory_layer_warn_and_ctrl_c_still_closes_sockets():
    port = free_port()
    with ServerProcess(gunicorn(port, "-w", "2"), port) as server:
        server.wait_output(IN_MEMORY_WARNING)
        assert "RedisChannelLayer" in server.output
        # Quick shutdown (Ctrl-C): no waiting, but sockets are still told.
        server.wait_listening()
        ws = ws_connect(port)
        ws_echo(ws, "bye")
        server.send_signal(signal.SIGINT)
        assert ws_close_code(ws) == 1001
        assert server.exit_code() == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "options, env, message",
    [
        (["--preload"], {}, "cannot run with --preload"),
        ([], {"RM_ROUTING": "rmproject.missing.routing"}, "geventchannels cannot start: "),
    ],
)
def test_gunicorn_stops_with_a_reason_instead_of_respawning(options, env, message):
    port = free_port()
    with ServerProcess(gunicorn(port, *options), port, env) as server:
        assert server.exit_code(40) != 0
        assert message in server.output
        assert server.output.count("Booting worker") <= 1


@pytest.mark.timeout(60)
def test_websockets_work_over_a_unix_socket_bind(tmp_path):
    path = tmp_path / "gc.sock"
    command = gunicorn(0, "-w", "1")
    command[command.index("-b") + 1] = f"unix:{path}"
    with ServerProcess(command) as server:
        server.wait_until(path.exists, what="the unix socket")
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(10)
        server.wait_until(lambda: sock.connect_ex(str(path)) == 0, what="a connection")
        ws = websocket.create_connection("ws://localhost/ws/", socket=sock, timeout=10)
        try:
            assert ws_echo(ws, "over unix")["text"] == "over unix"
        finally:
            ws.close()
        assert server.stop() == 0


@pytest.mark.timeout(60)
def test_at_worker_connections_a_new_client_gets_503_at_once():
    """gunicorn's --worker-connections is the worker's MAX_CONNECTIONS: with every slot
    held by a WebSocket, a new client is answered 503 at once instead of waiting in the
    listen backlog for a slot."""
    port = free_port()
    with ServerProcess(gunicorn(port, "-w", "1", "--worker-connections", "3"), port) as server:
        server.wait_listening()
        server.wait_until(lambda: worker_pid(port), what="a patched worker")
        sockets = [ws_connect(port) for _ in range(3)]
        for ws in sockets:
            ws_echo(ws, "holding a slot")
        started = time.monotonic()
        assert http_get(port, "/hello/")[0] == 503
        assert time.monotonic() - started < 2
        sockets.pop().close()
        server.wait_until(lambda: http_get(port, "/hello/")[0] == 200, what="a free slot")
        for ws in sockets:
            ws.close()
        assert server.stop() == 0
