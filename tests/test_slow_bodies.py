"""Slow, stalled and short request bodies against the real server, on both HTTP paths
(Django's WSGI fast path and routed ``http.request``): a body that stops or trickles is cut
by HTTP_BODY_TIMEOUT and HTTP_BODY_MIN_RATE with 408, one that ends early gets 400, the
connection closes, the log gets one counted line and no traceback; uploads at a normal
pace are unaffected. One case runs under gunicorn."""

from __future__ import annotations

import json
import logging
import re
import socket
import time

import gevent
import pytest
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from geventchannels import logs
from geventchannels.routing import route
from geventchannels.server import handler
from tests.livesrv import Recorder, live_server
from tests.test_slow_clients import connect, read_until_closed

from .conftest import free_port
from .runmodes.process import ServerProcess, gunicorn

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 0.5
PATHS = ["/fast/", "/routed/"]
#: What the fast path's views saw: the size read, or the exception their read raised.
seen: list[str] = []


@csrf_exempt
def upload(request):
    """Reads the body as it arrives, pausing ``?pause=`` seconds after the first piece."""
    size = 0
    try:
        while chunk := request.read(65536):
            if not size:
                gevent.sleep(float(request.GET.get("pause", 0)))
            size += len(chunk)
    except BaseException as error:
        seen.append(type(error).__name__)
        raise
    seen.append(str(size))
    return HttpResponse(f"received {size}")


urlpatterns = [path("fast/", upload)]


@pytest.fixture(scope="module")
def server():
    """Django (this module's urls) on the fast path, a consumer on /routed/."""
    routed = Recorder()

    def consumer(message):
        routed(message)
        message.reply_channel.send(
            {"status": 200, "content": b"received %d" % len(message["body"])}
        )

    routes = [route("http.request", consumer, path=r"^/routed/"), route("http.disconnect", routed)]
    with (
        override_settings(ROOT_URLCONF=__name__),
        live_server(routes, HTTP_BODY_TIMEOUT=TIMEOUT, HTTP_BODY_MIN_RATE=1000) as srv,
    ):
        srv.routed = routed
        yield srv


@pytest.fixture
def log(monkeypatch, caplog):
    """The server's log, with its body-failure tally starting afresh and a short interval."""
    monkeypatch.setattr(logs, "TALLY_INTERVAL", 0.3)
    tally = handler._bad_bodies
    if tally.reporter is not None:
        tally.reporter.kill()
    tally.reporter, tally.count = None, 0
    caplog.set_level(logging.INFO)
    seen.clear()
    return caplog


def post(path: str, length: int | bytes = 1_000_000, extra: bytes = b"") -> bytes:
    framing = (
        b"Transfer-Encoding: chunked" if length == b"chunked" else b"Content-Length: %d" % length
    )
    return b"POST %s HTTP/1.1\r\nHost: h\r\n%s\r\n%s\r\n" % (path.encode(), framing, extra)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1])


def body_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "before their body arrived" in r.getMessage()]


def check_clean(caplog) -> None:
    """No traceback and no error in the log: no Django 500, no pywsgi error."""
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]


def routed_requests(server) -> list[dict]:
    return [m for m in server.routed.messages if "body" in m]


# -- stalled and trickled bodies: 408 ------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_a_body_that_stops_gets_408_at_the_body_timeout(server, log, path):
    routed = len(routed_requests(server))
    sock = connect(server)
    sock.sendall(post(path) + b"x" * 100)
    started = time.monotonic()
    answer = read_until_closed(sock)  # the server closes after its answer
    elapsed = time.monotonic() - started
    assert status_of(answer) == 408
    assert b"Connection: close" in answer
    assert b"no body bytes for 0.5 s (100 received)" in answer
    assert TIMEOUT - 0.05 < elapsed < TIMEOUT + 1.0
    if path == "/fast/":
        assert seen == ["BodyTimeout"]  # the view's read raised
    else:
        assert len(routed_requests(server)) == routed  # the body is read before it is sent
    check_clean(log)
    assert body_lines(log) == [
        "1 request(s) closed before their body arrived whole (latest: answered 408, "
        "from 127.0.0.1:%d: no body bytes for 0.5 s (100 received))" % sock.getsockname()[1]
    ]


@pytest.mark.parametrize("path", PATHS)
def test_a_chunked_body_that_stops_gets_408(server, log, path):
    sock = connect(server)
    sock.sendall(post(path, b"chunked") + b"5\r\nhello\r\n3\r\nab")
    started = time.monotonic()
    answer = read_until_closed(sock)
    if path == "/fast/":
        # Django reads no chunked body (it has no Content-Length): its answer goes out,
        # then the rest of the body is waited for under the same limit, and the
        # connection closed.
        assert status_of(answer) == 200 and answer.endswith(b"received 0")
    else:
        assert status_of(answer) == 408
    assert TIMEOUT - 0.05 < time.monotonic() - started < TIMEOUT + 1.0
    check_clean(log)


def test_a_client_that_expects_100_continue_and_sends_nothing_gets_408(server, log):
    sock = connect(server)
    sock.sendall(post("/fast/", 10, b"Expect: 100-continue\r\n"))
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 408 "), answer


@pytest.mark.parametrize("path", PATHS)
def test_a_trickled_body_is_cut_by_the_minimum_rate(server, log, path):
    """A byte every 0.1 s never waits the 0.5 s timeout, but averages 10 bytes/s, under
    the 1,000 bytes/s minimum: cut once the waiting passes 0.5 s plus 1 s per 1,000 bytes."""
    sock = connect(server)
    sock.sendall(post(path))
    started = time.monotonic()
    sock.settimeout(0.1)
    answer = b""
    while not answer and time.monotonic() - started < 5:
        sock.sendall(b"x")
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            pass
    sock.settimeout(5)
    answer += read_until_closed(sock)
    assert status_of(answer) == 408
    assert b"slower than HTTP_BODY_MIN_RATE (1000 bytes/s)" in answer
    assert time.monotonic() - started < 2.0
    check_clean(log)


def test_without_a_minimum_rate_the_timeout_bounds_each_wait_not_the_body(log):
    """Trickled for three times the timeout, never pausing as long as it: served."""
    with live_server(wsgi_app=counting_app, HTTP_BODY_TIMEOUT=TIMEOUT, HTTP_BODY_MIN_RATE=0) as srv:
        sock = connect(srv)
        sock.sendall(post("/", 30, b"Connection: close\r\n"))
        for _ in range(15):
            gevent.sleep(0.1)
            sock.sendall(b"xx")
        assert read_until_closed(sock).endswith(b"received 30")


def counting_app(environ, start_response):
    body = b"received %d" % len(environ["wsgi.input"].read())
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


# -- short bodies: 400, or just closed ----------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_a_body_shorter_than_its_content_length_gets_400_after_a_half_close(server, log, path):
    sock = connect(server)
    sock.sendall(post(path, 100) + b"x" * 10)
    sock.shutdown(socket.SHUT_WR)
    answer = read_until_closed(sock)
    assert status_of(answer) == 400
    assert b"the connection ended 10 bytes into a 100-byte body" in answer
    check_clean(log)
    if path == "/fast/":
        assert seen == ["BodyError"]


@pytest.mark.parametrize("path", PATHS)
def test_a_client_gone_before_its_body_ended_leaves_one_counted_line(server, log, path):
    for _ in range(5):
        sock = connect(server)
        sock.sendall(post(path, 100) + b"x" * 10)
        sock.close()
    deadline = time.monotonic() + 5
    while sum(int(line.split()[0]) for line in body_lines(log)) < 5:
        assert time.monotonic() < deadline, body_lines(log)
        gevent.sleep(0.02)
    lines = body_lines(log)
    assert len(lines) <= 2, lines  # the first at once, the rest counted in one line
    assert all("ended 10 bytes into a 100-byte body" in line for line in lines)
    check_clean(log)


def test_a_body_the_view_did_not_read_is_discarded_under_the_same_limits(log):
    """The response went out before the body ended: the connection is just closed."""

    def early(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with live_server(wsgi_app=early, HTTP_BODY_TIMEOUT=TIMEOUT) as srv:
        sock = connect(srv)
        sock.sendall(post("/", 1000) + b"x" * 10)
        started = time.monotonic()
        answer = read_until_closed(sock)
        assert status_of(answer) == 200 and answer.endswith(b"\r\n\r\nok")
        assert TIMEOUT - 0.05 < time.monotonic() - started < TIMEOUT + 1.0
    assert re.search(r"latest: after a 200, from .*: no body bytes for 0.5 s", body_lines(log)[0])
    check_clean(log)


# -- uploads at a normal pace ----------------------------------------------------------------


def paced_upload(sock: socket.socket, path: str, size: int, pieces: int, pause: float) -> bytes:
    sock.sendall(post(path, size, b"Connection: close\r\n"))
    piece = b"u" * (size // pieces)
    for _ in range(pieces):
        sock.sendall(piece)
        gevent.sleep(pause)
    sock.sendall(b"u" * (size - len(piece) * pieces))
    return read_until_closed(sock)


@pytest.mark.parametrize("path, size", [("/fast/", 5 * 1024 * 1024), ("/routed/", 900_000)])
def test_an_upload_at_a_normal_pace_is_unaffected(server, log, path, size):
    """About 5 MB/s, in 50 pieces (a routed body travels in one message: under 1 MB)."""
    started = time.monotonic()
    answer = paced_upload(connect(server), path, size, 50, 0.02)
    assert status_of(answer) == 200
    assert answer.endswith(b"received %d" % size)
    assert time.monotonic() - started < 5
    assert not body_lines(log)
    check_clean(log)


def test_time_the_view_spends_between_reads_does_not_count(server, log):
    """The view pauses longer than the timeout: only waiting for the client counts."""
    answer = paced_upload(connect(server), f"/fast/?pause={TIMEOUT * 1.5}", 1_000_000, 4, 0)
    assert status_of(answer) == 200 and answer.endswith(b"received 1000000")
    assert seen == ["1000000"]


# -- gunicorn ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_under_gunicorn_stalled_and_short_bodies_are_answered_without_a_traceback():
    port = free_port()
    settings = json.dumps({"HTTP_BODY_TIMEOUT": TIMEOUT})
    with ServerProcess(gunicorn(port), port, env={"RM_GEVENTCHANNELS": settings}) as server:
        server.wait_listening()

        def connection() -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout=10)

        short = connection()
        short.sendall(post("/upload/", 100) + b"x" * 10)
        short.close()
        server.wait_output("ended 10 bytes into a 100-byte body", 10)
        stalled = connection()
        stalled.sendall(post("/upload/") + b"x" * 10)
        started = time.monotonic()
        assert status_of(read_until_closed(stalled)) == 408
        assert time.monotonic() - started < TIMEOUT + 1.0
        size = 5 * 1024 * 1024
        answer = paced_upload(connection(), "/upload/", size, 50, 0.01)
        assert b"received %d" % size in answer, answer[-200:]
        output = server.output
    assert "Traceback" not in output, output
