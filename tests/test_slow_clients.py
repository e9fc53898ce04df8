"""Slow and idle clients against the real server: the request-head timeout, the idle
keep-alive timeout, the head-size limit (and the memory an unfinished head holds), and what
a new client gets when every connection slot is taken. The 1,000-connection slowloris runs
against gunicorn with its default worker_connections (marked slow)."""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import time
from pathlib import Path

import gevent
import pytest
import websocket

from tests.livesrv import live_server
from tests.test_tls import certificate as tls_certificate
from tests.test_tls import client_context, live_tls_server

from .conftest import free_port
from .runmodes.process import ServerProcess, gunicorn, http_get

pytestmark = pytest.mark.timeout(60)


def hello(environ, start_response):
    body = environ["wsgi.input"].read() or b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def connect(server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def get(sock: socket.socket, path: bytes = b"/") -> bytes:
    """One keep-alive request on ``sock``; its whole response (Content-Length framed)."""
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % path)
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 5:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


@pytest.fixture(scope="module")
def quick():
    """A server with short timeouts, so the tests wait a fraction of a second."""
    with live_server(
        wsgi_app=hello,
        HTTP_HEAD_TIMEOUT=0.6,
        HTTP_KEEPALIVE_TIMEOUT=0.4,
        HTTP_MAX_HEAD_SIZE=4096,
    ) as srv:
        yield srv


def test_a_head_that_never_finishes_gets_408_at_the_head_timeout(quick):
    sock = connect(quick)
    started = time.monotonic()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n")
    for _ in range(3):  # a byte now and then does not move the deadline
        gevent.sleep(0.1)
        sock.sendall(b"X")
    answer = read_until_closed(sock)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.5 < elapsed < 1.5


def test_a_connection_that_sends_nothing_is_closed_at_the_head_timeout(quick):
    sock = connect(quick)
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert 0.5 < time.monotonic() - started < 1.5


def test_an_idle_keep_alive_connection_is_closed_at_the_keepalive_timeout(quick):
    sock = connect(quick)
    assert get(sock).startswith(b"HTTP/1.1 200 ")
    gevent.sleep(0.2)  # within the keep-alive timeout: served
    assert get(sock).startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert 0.3 < time.monotonic() - started < 1.2


def test_a_keep_alive_head_gets_the_head_timeout_from_its_first_byte(quick):
    sock = connect(quick)
    assert get(sock).startswith(b"HTTP/1.1 200 ")
    gevent.sleep(0.3)
    sock.sendall(b"G")  # the keep-alive wait ends; the head has 0.6 s from here
    gevent.sleep(0.4)  # longer than the keep-alive timeout
    sock.sendall(b"ET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_a_head_over_the_size_limit_gets_431_at_once(quick):
    sock = connect(quick)
    started = time.monotonic()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Big: " + b"b" * 5000 + b"\r\n")
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert time.monotonic() - started < 0.5
    # A head just under the limit is served.
    sock = connect(quick)
    head = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Big: "
    sock.sendall(head + b"b" * (4096 - len(head) - 4) + b"\r\n\r\n")
    assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


def test_the_trailer_of_a_chunked_body_is_bounded_by_the_head_size(quick):
    sock = connect(quick)
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
        + b"X-T: "
        + b"t" * 5000
        + b"\r\n\r\n"
    )
    assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")


certificate = tls_certificate  # the fixture


def test_a_tls_handshake_that_never_comes_is_cut_at_the_head_timeout(certificate):
    with live_tls_server(certificate, [], wsgi_app=hello, HTTP_HEAD_TIMEOUT=0.5) as (srv, _):
        mute = connect(srv)  # TCP only: no ClientHello
        started = time.monotonic()
        assert read_until_closed(mute) == b""
        assert 0.4 < time.monotonic() - started < 1.5
        with client_context(certificate[0]).wrap_socket(
            connect(srv), server_hostname="127.0.0.1"
        ) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            assert read_until_closed(tls).startswith(b"HTTP/1.1 200 ")


def test_a_stop_serves_keep_alive_requests_sent_meanwhile_unless_told_not_to_wait():
    from geventchannels.test.live import LiveServer

    for keepalive_grace, served in ((None, True), (0, False)):
        live = LiveServer([], wsgi_app=hello, HTTP_KEEPALIVE_TIMEOUT=2).start()
        sock = connect(live)
        assert get(sock).startswith(b"HTTP/1.1 200 ")  # now an idle keep-alive connection
        live.server.close()
        stopping = gevent.spawn(live.app.stop, 5, 1001, keepalive_grace)
        gevent.sleep(0.3)
        if served:
            answer = get(sock)
            assert answer.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in answer
            assert read_until_closed(sock) == b""
        else:
            assert read_until_closed(sock) == b""  # closed without waiting
        stopping.get(timeout=5)
        live.stop()


# -- connection slots ------------------------------------------------------------------


def echo(message):
    message.reply_channel.send({"text": message["text"]})


def test_at_max_connections_a_new_client_takes_an_idle_connections_slot():
    with live_server(wsgi_app=hello, MAX_CONNECTIONS=3) as srv:
        idle = [connect(srv) for _ in range(3)]
        for sock in idle:
            assert get(sock).startswith(b"HTTP/1.1 200 ")  # now idle keep-alive
        fresh = connect(srv)
        started = time.monotonic()
        assert get(fresh).startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - started < 0.5
        assert idle[0].recv(1) == b""  # the one idle longest gave its slot up
        assert get(idle[1]).startswith(b"HTTP/1.1 200 ")
        assert srv.app.waiting_heads.evicted == 1


def test_at_max_connections_with_no_one_waiting_a_new_client_gets_503_at_once():
    with live_server([], wsgi_app=hello, MAX_CONNECTIONS=2) as srv:
        sockets = [websocket.create_connection(srv.ws_url + "/", timeout=5) for _ in range(2)]
        started = time.monotonic()
        sock = connect(srv)  # sends nothing: the answer does not wait for a request
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert time.monotonic() - started < 1.5
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().status == 503
        conn.close()
        for ws in sockets:
            ws.close()


# -- gunicorn: slowloris, unfinished heads, worker_connections --------------------------


def worker_rss(port: int) -> tuple[int, int]:
    """(pid, resident memory in bytes) of the worker answering on ``port``."""
    status, body = http_get(port, "/patched/")
    assert status == 200
    pid = json.loads(body)["pid"]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return pid, int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Slowloris:
    """``count`` connections that each send a request head a few bytes at a time and
    never finish it; a connection the server closes is opened again at once."""

    def __init__(self, port: int, count: int, interval: float = 0.5):
        self.port = port
        self.interval = interval
        self.closed = 0
        self.running = True
        self.greenlets = [gevent.spawn(self._one) for _ in range(count)]

    def _one(self) -> None:
        while self.running:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n")
                    while self.running:
                        gevent.sleep(self.interval)
                        sock.sendall(b"X-a: b\r\n")
            except OSError:
                self.closed += 1
                gevent.sleep(0.05)

    def stop(self) -> None:
        self.running = False
        gevent.killall(self.greenlets, timeout=10)


def timed_get(port: int) -> float:
    started = time.monotonic()
    status, body = http_get(port, "/hello/", timeout=10)
    assert status == 200, (status, body)
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_normal_requests_are_served_during_a_1000_connection_slowloris():
    port = free_port()
    with ServerProcess(gunicorn(port, "-w", "1"), port) as server:  # worker_connections: 1000
        server.wait_listening()
        _, rss_before = worker_rss(port)
        attack = Slowloris(port, 1000)
        try:
            server.wait_until(
                lambda: attack.closed > 0 or len(read_established(port)) >= 1000,
                what="1000 slow connections",
            )
            latencies = []
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                latencies += gevent.joinall(
                    [gevent.spawn(timed_get, port) for _ in range(5)], raise_error=True
                )
            latencies = sorted(g.value for g in latencies)
        finally:
            attack.stop()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(
            f"slowloris: {len(latencies)} requests, p50 {statistics.median(latencies):.3f} s, "
            f"p99 {p99:.3f} s, slow connections cut {attack.closed}"
        )
        assert p99 < 1.0
        assert server.stop() == 0


def read_established(port: int) -> list[str]:
    """Client-side TCP connections to ``port`` that are established (from /proc)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    wanted = f":{port:04X}"
    return [r for r in rows if r.split()[2].endswith(wanted) and r.split()[3] == "01"]


def unread_bytes(port: int) -> int:
    """Bytes waiting in the receive queues of the server's connections on ``port``."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    wanted = f":{port:04X}"
    queued = [r.split()[4] for r in rows if r.split()[1].endswith(wanted) and r.split()[3] == "01"]
    return sum(int(q.split(":")[1], 16) for q in queued)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_memory_per_unfinished_head_is_bounded_by_the_head_limit():
    """Each connection sends as much of a head as the limit allows and stops: the worker
    grows by about that much per connection, not by the 6 MB an unbounded head could hold,
    and a connection that goes on past the limit gets 431."""
    port = free_port()
    count, limit = 300, 65536
    line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + line * ((limit - 100) // len(line))
    with ServerProcess(gunicorn(port, "-w", "1"), port) as server:
        server.wait_listening()
        pid, before = worker_rss(port)
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(count)]
        for sock in sockets:
            sock.sendall(head)
        server.wait_until(lambda: unread_bytes(port) == 0, what="the heads read by the worker")
        _, after = worker_rss(port)
        per_connection = (after - before) / count
        print(f"unfinished {len(head)}-byte heads: {per_connection / 1024:.0f} KiB each")
        assert per_connection < 2 * limit
        over = sockets[0]
        over.sendall(line * 100)
        answer = over.recv(65536)
        assert answer.startswith(b"HTTP/1.1 431 ")
        for sock in sockets:
            sock.close()
        assert server.stop() == 0
