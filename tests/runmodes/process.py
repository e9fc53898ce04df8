"""Start the run-mode test project as a real process and talk to it with real clients.

Every wait has a deadline; a process that dies early fails the test with its output.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import websocket

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
START_TIMEOUT = 40.0


class ServerProcess:
    """A subprocess started in tests/runmodes with the project on PYTHONPATH; its output
    (stdout and stderr together) goes to a file readable at any time."""

    def __init__(self, arguments: list[str], port: int | None = None, env: dict | None = None):
        self.port = port
        self.output_file = tempfile.NamedTemporaryFile(prefix="gc-runmode-", suffix=".log")
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("RM_", "DJANGO_"))}
        environ["PYTHONPATH"] = os.pathsep.join([str(HERE), environ.get("PYTHONPATH", "")])
        environ["PYTHONUNBUFFERED"] = "1"
        environ["DJANGO_RUNSERVER_HIDE_WARNING"] = "true"
        environ.update(env or {})
        self.process = subprocess.Popen(
            arguments,
            cwd=HERE,
            env=environ,
            stdout=self.output_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return Path(self.output_file.name).read_text(errors="replace")

    def wait_until(self, predicate, timeout: float = START_TIMEOUT, what: str = "condition"):
        """Poll ``predicate`` until it returns something truthy; fail if the process dies
        or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if self.process.poll() is not None:
                raise AssertionError(
                    f"process exited with {self.process.returncode} before {what}; output:\n{self.output}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout:.0f} s; output:\n{self.output}")
            time.sleep(0.05)

    def wait_listening(self, timeout: float = START_TIMEOUT) -> None:
        def listening():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        self.wait_until(listening, timeout, f"listening socket on port {self.port}")

    def wait_output(self, text: str, timeout: float = START_TIMEOUT) -> None:
        self.wait_until(lambda: text in self.output, timeout, f"output {text!r}")

    def exit_code(self, timeout: float = 20.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"process did not exit in {timeout:.0f} s; output:\n{self.output}"
            ) from None

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.exit_code(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.output_file.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def manage(*arguments: str) -> list[str]:
    return [PYTHON, "manage.py", *arguments]


def gunicorn(port: int, *options: str) -> list[str]:
    """The test project under ``gunicorn -k geventchannels.gunicorn.Worker`` on ``port``."""
    return [
        str(BIN / "gunicorn"),
        "-k",
        "geventchannels.gunicorn.Worker",
        "-b",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        "--graceful-timeout",
        "5",
        *options,
        "rmproject.wsgi",
    ]


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def http_json(port: int, path: str) -> dict:
    status, body = http_get(port, path)
    assert status == 200, (status, body[:300])
    return json.loads(body)


def ws_connect(port: int, path: str = "/ws/", timeout: float = 10.0) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout)


def ws_echo(ws: websocket.WebSocket, text: str) -> dict:
    """Send ``text``; the project's consumer answers with the text, its own pid
    (``consumer_pid``) and the reply prefix of the socket's server process (``server``)."""
    ws.send(text)
    reply = json.loads(ws.recv())
    assert reply["text"] == text, reply
    return reply


def ws_close_code(ws: websocket.WebSocket, timeout: float = 15.0) -> int:
    """Read until the server's close frame and return its code (messages before it are
    skipped)."""
    ws.settimeout(timeout)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005


def check_graceful_stop(server: ServerProcess, port: int) -> None:
    """SIGTERM while a request is in flight and a WebSocket is open: the response
    completes, the socket gets 1001, the process exits 0."""
    with ThreadPoolExecutor(1) as pool:
        ws = ws_connect(port)
        ws_echo(ws, "ready")  # the socket has joined the group the slow view tells
        in_flight = pool.submit(http_get, port, "/slow/?seconds=1", 20)
        ws.settimeout(20)
        assert ws.recv() == "slow-started"

        server.send_signal(signal.SIGTERM)
        assert ws_close_code(ws) == 1001
        assert in_flight.result(20) == (200, b"slow done")
        assert server.exit_code() == 0
