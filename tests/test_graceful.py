"""Graceful stop in every run mode: on SIGTERM a request in flight still gets its response,
open WebSockets get close 1001, and the process exits 0; on a stop or a gunicorn reload,
HTTP requests in every phase (head half sent, upload half sent, keep-alive request sent
during the drain) are served by the old process."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest

from .conftest import free_port
from .runmodes.process import (
    BIN,
    ServerProcess,
    check_graceful_stop,
    gunicorn,
    http_get,
    http_json,
    manage,
    ws_close_code,
    ws_connect,
    ws_echo,
)


def runserver(port: int) -> list[str]:
    return manage("runserver", f"127.0.0.1:{port}", "--noreload")


def serve(port: int) -> list[str]:
    return [str(BIN / "geventchannels"), "serve", "rmproject.wsgi", "--bind", f"127.0.0.1:{port}"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", [runserver, serve, gunicorn])
def test_sigterm_finishes_the_request_in_flight_and_closes_websockets_with_1001(command):
    port = free_port()
    with ServerProcess(command(port), port) as server:
        server.wait_listening()
        check_graceful_stop(server, port)  # test_runserver runs it through the reloader too


@pytest.mark.timeout(60)
def test_a_second_signal_cuts_the_graceful_stop_short():
    port = free_port()
    command = [*serve(port), "--graceful-timeout", "30"]
    with ServerProcess(command, port) as server, ThreadPoolExecutor(1) as pool:
        server.wait_listening()
        ws = ws_connect(port)
        ws_echo(ws, "ready")
        in_flight = pool.submit(http_get, port, "/slow/?seconds=20", 30)
        ws.settimeout(20)
        assert ws.recv() == "slow-started"
        server.send_signal(signal.SIGTERM)
        assert ws_close_code(ws) == 1001
        started = time.monotonic()
        server.send_signal(signal.SIGINT)
        assert server.exit_code(15) == 1
        assert time.monotonic() - started < 10  # not the 20 s request nor the 30 s grace
        assert "graceful stop cut short" in server.output
        with pytest.raises(OSError):
            in_flight.result(20)


# -- in-flight HTTP in every phase -------------------------------------------------------

UPLOAD = 3_000_000
DRAIN_ENV = {"RM_GEVENTCHANNELS": json.dumps({"HTTP_KEEPALIVE_TIMEOUT": 20})}


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response from ``sock`` (read by http.client, chunked or not)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return response.status, headers, response.read()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    return sock


class PhasesInFlight:
    """One HTTP request in each phase a stop can catch it in, all on the old process:
    a head half sent, a slow view running, an upload half sent, an idle keep-alive
    connection that sends its next request during the drain."""

    def __init__(self, port: int, old_pid: int):
        self.port = port
        self.old_pid = old_pid
        self.partial_head = connect(port)
        self.partial_head.sendall(b"GET /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        self.upload = connect(port)
        self.upload.sendall(
            b"POST /upload/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % UPLOAD
        )
        self.upload.sendall(b"u" * (UPLOAD // 3))
        self.keep_alive = connect(port)
        self.keep_alive.sendall(b"GET /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, body = read_response(self.keep_alive)
        assert (status, body) == (200, f"hello from {old_pid}".encode())
        assert headers.get("connection") != "close"
        self.slow = gevent.spawn(http_get, port, "/slow/?seconds=3", 30)

    def finish(self) -> None:
        """Send what each request still lacks, during the drain, and check the answers
        come from the old process, each closing its connection."""
        self.partial_head.sendall(b"\r\n")
        self.upload.sendall(b"u" * (UPLOAD - UPLOAD // 3))
        self.keep_alive.sendall(b"GET /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        hello = f"hello from {self.old_pid}".encode()
        for sock, expected in (
            (self.partial_head, hello),
            (self.keep_alive, hello),
            (self.upload, b"received %d" % UPLOAD),
        ):
            status, headers, body = read_response(sock)
            assert (status, body) == (200, expected)
            assert headers.get("connection") == "close", (sock, headers)
            assert sock.recv(1) == b""  # and the server closed it
            sock.close()
        assert self.slow.get(timeout=20) == (200, b"slow done")


def process_ended(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "\nState:\tZ" in status.read()
    except FileNotFoundError:
        return True


def gunicorn_for_drain(port: int) -> list[str]:
    command = gunicorn(port)
    command[command.index("--graceful-timeout") + 1] = "20"
    return command


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "command, signum, close_code",
    [
        (gunicorn_for_drain, signal.SIGHUP, 1012),
        (gunicorn_for_drain, signal.SIGTERM, 1001),
        (lambda port: [*serve(port), "--graceful-timeout", "20"], signal.SIGTERM, 1001),
    ],
    ids=["gunicorn-HUP", "gunicorn-TERM", "serve-TERM"],
)
def test_a_stop_or_reload_finishes_http_requests_in_every_phase(command, signum, close_code):
    port = free_port()
    with ServerProcess(command(port), port, DRAIN_ENV) as server:
        server.wait_listening()
        old_pid = http_json(port, "/patched/")["pid"]
        ws = ws_connect(port)
        ws_echo(ws, "ready")
        phases = PhasesInFlight(port, old_pid)
        ws.settimeout(20)
        assert ws.recv() == "slow-started"

        server.send_signal(signum)
        assert ws_close_code(ws) == close_code  # the drain has begun
        started = time.monotonic()
        # Longer than the drain used to last before it cut everything (about 1 s).
        gevent.sleep(1.5)
        assert not process_ended(old_pid)
        try:
            phases.finish()
        except BaseException:
            print(server.output)
            raise
        if signum == signal.SIGHUP:
            new_pid = server.wait_until(
                lambda: (pid := http_json(port, "/patched/")["pid"]) != old_pid and pid,
                what="the new worker",
            )
            assert new_pid != old_pid
            # Nothing is left open in the old worker: it leaves well before the grace.
            server.wait_until(lambda: process_ended(old_pid), timeout=10, what="old worker exit")
        else:
            assert server.exit_code(15) == 0
        assert time.monotonic() - started < 15
