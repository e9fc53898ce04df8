"""Graceful stop in every run mode: on SIGTERM a request in flight still gets its response,
open WebSockets get close 1001, and the process exits 0."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import free_port
from .runmodes.process import (
    BIN,
    ServerProcess,
    check_graceful_stop,
    http_get,
    manage,
    ws_close_code,
    ws_connect,
    ws_echo,
)


def runserver(port: int) -> list[str]:
    return manage("runserver", f"127.0.0.1:{port}", "--noreload")


def serve(port: int) -> list[str]:
    return [str(BIN / "geventchannels"), "serve", "rmproject.wsgi", "--bind", f"127.0.0.1:{port}"]


def gunicorn(port: int) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        "-k",
        "geventchannels.gunicorn.Worker",
        "-b",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        "--graceful-timeout",
        "5",
        "rmproject.wsgi",
    ]


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
