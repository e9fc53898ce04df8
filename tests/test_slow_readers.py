"""Clients that stop reading: what waits for them is bounded per socket (bytes and
messages) and for the whole process, they are dropped (consumers see 1008), and the
memory they held goes back to the system once they are gone.

Real sockets on 127.0.0.1; the clients are websocket-client sockets with a small receive
buffer that never read. The memory test runs the server in a process of its own
(tests/slow_reader_server.py) and reads its RSS from /proc.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest
import websocket

from geventchannels.logs import Tally
from geventchannels.routing import route
from geventchannels.server import writer
from tests.livesrv import Recorder, live_server

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def flood(message) -> None:
    """ "COUNT SIZE [yield]": send COUNT binary messages of SIZE bytes back, letting other
    greenlets run every 8 messages with "yield"."""
    count, size, *rest = message["text"].split()
    payload = b"x" * int(size)
    for index in range(int(count)):
        message.reply_channel.send({"bytes": payload}, immediately=True)
        if rest and index % 8 == 7:
            gevent.sleep(0)


@pytest.fixture
def drops(monkeypatch, caplog):
    """The drop warnings of this test, each logged (not counted into a later line)."""
    caplog.set_level(logging.WARNING, "geventchannels.server.websocket")
    tally = Tally(writer._dropped.template, writer._dropped.logger)
    monkeypatch.setattr(writer, "_dropped", tally)
    monkeypatch.setattr(
        Tally, "add", lambda self, *args: self.logger.warning(self.template, 1, *args)
    )
    yield lambda: [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]


def slow_reader(server, path: str = "/slow/") -> websocket.WebSocket:
    return websocket.create_connection(
        server.ws_url + path, timeout=5, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
    )


def held_bytes(line: str) -> int:
    return int(re.search(r"(\d+) bytes waited", line).group(1))


def test_a_slow_reader_is_dropped_once_the_bytes_waiting_pass_the_bound(drops):
    ended = Recorder()
    with live_server(
        [route("websocket.receive", flood), route("websocket.disconnect", ended)]
    ) as srv:
        ws = slow_reader(srv)
        ws.send("200 65536")  # 12.8 MB for a client that never reads
        assert ended.wait_for(timeout=10)["code"] == 1008
        ws.close()
    (line,) = drops()
    assert "WEBSOCKET_OUTBOUND_BYTES" in line
    # The default bound (4 MiB), passed by at most the frame that crossed it.
    assert 4 * MiB < held_bytes(line) <= 4 * MiB + 65536 + 14
    assert writer.BACKLOG.total == 0 and not writer.BACKLOG.writers


def test_large_messages_sent_in_one_go_are_bounded_too(drops):
    """Ten 1 MiB messages from one consumer call, without a pause: the batch is written
    (and the bound checked) long before ten are queued."""
    ended = Recorder()
    with live_server(
        [route("websocket.receive", flood), route("websocket.disconnect", ended)],
        WEBSOCKET_OUTBOUND_BYTES=2 * MiB,
    ) as srv:
        ws = slow_reader(srv)
        ws.send(f"10 {MiB}")
        assert ended.wait_for(timeout=10)["code"] == 1008
        ws.close()
    (line,) = drops()
    assert held_bytes(line) <= 3 * MiB + 14


def test_many_small_messages_hit_the_message_bound(drops):
    ended = Recorder()
    with live_server(
        [route("websocket.receive", flood), route("websocket.disconnect", ended)]
    ) as srv:
        ws = slow_reader(srv)
        ws.send("100000 100")  # 10 MB in 100-byte messages
        assert ended.wait_for(timeout=10)["code"] == 1008
        ws.close()
    (line,) = drops()
    assert "more than 1024 messages waited for one (WEBSOCKET_OUTBOUND_QUEUE)" in line


def test_the_process_total_drops_the_slow_clients_holding_the_most(drops):
    """Three slow readers flooded at once under a 3 MiB total (8 MiB each allowed): all
    three are dropped for the total, while a client that reads gets every message."""
    ended = Recorder()
    with live_server(
        [route("websocket.receive", flood), route("websocket.disconnect", ended)],
        WEBSOCKET_OUTBOUND_BYTES=8 * MiB,
        WEBSOCKET_OUTBOUND_TOTAL=3 * MiB,
    ) as srv:
        slow = [slow_reader(srv, f"/slow/{n}/") for n in range(3)]
        reader = websocket.create_connection(srv.ws_url + "/reader/", timeout=10)
        for ws in slow:
            ws.send("400 65536 yield")
        reader.send("400 16384 yield")
        for _ in range(400):
            assert len(reader.recv()) == 16384
        codes = {m["path"]: m["code"] for m in ended.wait_count(3, timeout=10)}
        assert codes == {f"/slow/{n}/": 1008 for n in range(3)}
        for ws in slow + [reader]:
            ws.close()
    lines = drops()
    assert len(lines) == 3 and all("WEBSOCKET_OUTBOUND_TOTAL" in line for line in lines)
    for line in lines:
        total = int(re.search(r"held (\d+) bytes", line).group(1))
        assert total <= 3 * MiB + 65536 + 14


# -- memory goes back to the system ---------------------------------------------------------


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def server_process():
    """The server in its own process, slow clients allowed 64 MiB each."""
    overrides = {"WEBSOCKET_OUTBOUND_BYTES": 64 * MiB, "WORKER_CONCURRENCY": 50}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gevent.monkey",
            "tests/slow_reader_server.py",
            json.dumps(overrides),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("port "), f"server did not start: {line!r}"
        process.port = int(line.split()[1])
        yield process
    finally:
        process.kill()
        process.wait(10)
        process.stdin.close()
        process.stdout.close()


@pytest.mark.slow
def test_rss_returns_to_its_level_once_slow_readers_are_dropped(server_process):
    """Six slow readers take the server 150 MB and more past its size while 300 clients connect
    (their objects land between the queued frames, so the freed memory is not at the top
    of the heap, where glibc would give it back by itself); once they are dropped, RSS
    comes back within 20 % of where it was before they came."""
    pid, url = server_process.pid, f"ws://127.0.0.1:{server_process.port}/"
    control = websocket.create_connection(url, timeout=10)

    def status() -> dict:
        control.send("status")
        return json.loads(control.recv())

    for _ in range(200):  # warm up: first allocations, code paths, caches
        control.send("x" * 1000)
        control.recv()
    before = rss_mib(pid)
    slow = []
    for _ in range(6):
        ws = websocket.create_connection(
            url, timeout=10, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
        )
        ws.send("flood 2100 65536")  # 138 MB each, dropped at 64 MiB
        slow.append(ws)
    others = []
    for _ in range(300):
        ws = websocket.create_connection(url, timeout=10)
        ws.send("hello")
        assert ws.recv() == "hello"
        others.append(ws)
    wait_until(lambda: status()["websockets"] == 1 + len(others), 20, "drop of the slow readers")
    peak = rss_mib(pid, "VmHWM")
    assert peak - before > 150, f"the slow readers held too little to tell: {before} -> {peak}"
    after = wait_until(
        lambda: (rss := rss_mib(pid)) <= before * 1.2 and rss, 10, "RSS back within 20 %"
    )
    assert status()["backlog"] == 0
    for ws in slow + others + [control]:
        ws.close()
    print(f"RSS before {before:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB")
