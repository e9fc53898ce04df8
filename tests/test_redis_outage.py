"""A Redis outage as WebSocket clients and the log see it, against the real server and a
real redis-server stopped mid-test: handshakes get 503 at once, a socket that sends a
frame is closed with 1013, the log shows the outage once plus counted summaries (no
traceback per message), and new handshakes succeed once Redis is back. A Redis that
drops packets instead (a listener that accepts and never answers) fails commands within
the layer's socket timeout, and a handshake still gets its 503.

Both paths: local first (the process's own pool runs the consumers, which fail calling
the layer) and a server without a pool (``--noworker``), which itself sends
``websocket.connect`` / ``websocket.receive`` into Redis.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
import pytest
import websocket

from geventchannels import Channel, Group, logs
from geventchannels.exceptions import ChannelLayerUnavailable
from geventchannels.layers import RedisChannelLayer
from geventchannels.layers.redis.connections import SOCKET_TIMEOUT
from geventchannels.routing import route
from tests.conftest import RedisServer
from tests.layers.conftest import wait_until
from tests.livesrv import close_code, live_server

from .dbfile import file_database
from .test_worker import Pool

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def handshake_status(server, path: str = "/", timeout: float = 10.0) -> tuple[int, float]:
    """(HTTP status, seconds until it came) of a handshake on a raw socket."""
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(HANDSHAKE.format(path=path).encode("latin-1"))
        head = b""
        while b"\r\n" not in head:
            data = sock.recv(4096)
            assert data, f"the server closed the connection without an answer after {head!r}"
            head += data
    return int(head.split(b" ", 2)[1]), time.monotonic() - started


def assert_503_at_once(server, count: int) -> None:
    """``count`` handshakes at once (a burst of reconnecting clients) all get 503 within
    a second."""
    burst = [gevent.spawn(handshake_status, server, f"/{n}/") for n in range(count)]
    gevent.joinall(burst, timeout=10, raise_error=True)
    answers = [greenlet.value for greenlet in burst]
    assert all(status == 503 and seconds < 1.0 for status, seconds in answers), answers


def connect(server, path: str = "/") -> websocket.WebSocket:
    return websocket.create_connection(server.ws_url + path, timeout=5)


class Outage:
    """A private redis-server that a test stops and starts again on the same port."""

    def __init__(self) -> None:
        self.redis = RedisServer()
        self.url = self.redis.url

    def begin(self) -> None:
        self.redis.process.terminate()
        self.redis.process.wait(10)

    def end(self) -> None:
        self.redis = RedisServer(port=self.redis.port)

    def layer(self) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=[self.url])


@pytest.fixture(autouse=True, scope="module")
def migrated_database() -> None:
    """The project's tables exist, as in any deployment: a process that decorated a
    consumer with channel_session (another test module may have) deletes the channel
    session of every socket that closes, and that must not be what these tests log."""
    file_database()


@pytest.fixture
def outage(monkeypatch) -> Iterator[Outage]:
    monkeypatch.setattr(logs, "TALLY_INTERVAL", 0.3)
    redis = Outage()
    try:
        yield redis
    finally:
        redis.redis.stop()


@pytest.fixture
def log(caplog) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="geventchannels")
    return caplog


def lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def counted(caplog, text: str) -> int:
    """The events a Tally logged: its first line counts 1, each summary its number."""
    return sum(int(line.split()[0]) for line in lines(caplog, text))


def assert_no_traceback(caplog) -> None:
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks


def assert_outage_logged_once(caplog, layers: int = 1) -> None:
    """One line per layer object that met the outage."""
    outage = lines(caplog, "; retrying with back-off")
    assert len(outage) == layers, outage


# -- local first: the consumers of this process fail calling the layer ---------------------


def join_room(message) -> None:
    Group("room").add(message.reply_channel)
    message.reply_channel.send({"accept": True})


def test_handshakes_whose_consumer_cannot_reach_redis_get_503_at_once(outage, log):
    layer = outage.layer()
    with live_server([route("websocket.connect", join_room)], layer=layer) as server:
        connect(server).close()
        outage.begin()
        assert_503_at_once(server, 20)
        text = "could not reach the channel layer"
        wait_until(lambda: counted(log, text) == 20, what="20 counted failures")
        assert len(lines(log, text)) <= 3  # the first at once, then one line per interval
        assert "join_room on websocket.connect" in lines(log, text)[0]
        assert_no_traceback(log)
        assert_outage_logged_once(log)

        outage.end()
        status, seconds = handshake_status(server)
        assert status == 101 and seconds < 1.0
        assert layer.group_channels("room")


def send_to_room(message) -> None:
    Group("room").send({"text": message["text"]})  # buffered: sent when the consumer returns


def send_to_log_now(message) -> None:
    Channel("log").send({"text": message["text"]}, immediately=True)


@pytest.mark.parametrize("consumer", [send_to_room, send_to_log_now])
def test_a_socket_whose_consumer_cannot_reach_redis_is_closed_with_1013(outage, log, consumer):
    calls = []

    def counting(message) -> None:
        calls.append(1)
        consumer(message)

    layer = outage.layer()
    routes = [route("websocket.connect", join_room), route("websocket.receive", counting)]
    with live_server(routes, layer=layer) as server:
        ws = connect(server)
        outage.begin()
        started = time.monotonic()
        for n in range(50):
            ws.send(f"frame {n}")
        assert close_code(ws) == 1013
        assert time.monotonic() - started < 1.0
        text = "could not reach the channel layer"
        wait_until(lambda: calls and counted(log, text) == len(calls), what="counted failures")
        assert len(lines(log, text)) <= 3
        assert_no_traceback(log)
        assert_outage_logged_once(log)

        outage.end()
        again = connect(server)  # join_room reaches Redis again
        again.send("after")
        if consumer is send_to_room:
            assert again.recv() == "after"
        else:
            wait_until(lambda: layer.receive(["log"]) == ("log", {"text": "after"}))
        again.close()


# -- no pool here (--noworker): the server itself sends into Redis --------------------------


def echo(message) -> None:
    message.reply_channel.send({"text": message["text"]})


@contextmanager
def server_without_pool(outage: Outage) -> Iterator:
    """A live server without consumers, and a pool on a layer of its own (another
    process's, in effect) serving its sockets through Redis."""
    routes = [route("websocket.receive", echo)]
    with Pool(routes, layer=outage.layer(), concurrency=4) as pool:
        with live_server([], layer=outage.layer(), run_worker=False) as server:
            yield server
        pool.layer.close()


def test_without_a_pool_handshakes_get_503_and_frames_1013_while_redis_is_down(outage, log):
    with server_without_pool(outage) as server:
        sockets = [connect(server, f"/{n}/") for n in range(5)]
        sockets[0].send("up")
        assert sockets[0].recv() == "up"
        outage.begin()

        assert_503_at_once(server, 20)
        started = time.monotonic()
        for ws in sockets:
            for n in range(10):
                ws.send(f"frame {n}")
        assert [close_code(ws) for ws in sockets] == [1013] * 5
        assert time.monotonic() - started < 1.0

        refused = "handshake(s) answered 503: websocket.connect could not be sent"
        closed = "closed with 1013: websocket.receive could not be sent"
        wait_until(lambda: counted(log, refused) == 20 and counted(log, closed) == 5)
        assert len(lines(log, refused)) <= 3 and len(lines(log, closed)) <= 2
        assert "is unreachable" in lines(log, refused)[0]
        assert_no_traceback(log)
        assert_outage_logged_once(log, layers=2)  # the server's and the pool's

        outage.end()

        def echoes() -> bool:
            try:
                ws = connect(server, "/back/")
            except websocket.WebSocketBadStatusException:
                return False
            ws.send("back")
            back = ws.recv() == "back"
            ws.close()
            return back

        wait_until(echoes, 10, "an echo once Redis is back")


# -- a Redis that drops packets (a partition): connected, never answering ------------------


class SilentRedis:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers, as a Redis
    behind a partition looks to its clients (the connection holds, nothing comes back)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.acceptor = gevent.spawn(self._accept)

    def _accept(self) -> None:
        while True:
            self.accepted.append(self.listener.accept()[0])

    def layer(self, **connection_kwargs) -> RedisChannelLayer:
        return RedisChannelLayer(
            hosts=[f"redis://127.0.0.1:{self.port}/0"], connection_kwargs=connection_kwargs
        )

    def close(self) -> None:
        self.acceptor.kill()
        for sock in [self.listener, *self.accepted]:
            sock.close()
        self.accepted.clear()


@pytest.fixture
def silent() -> Iterator[SilentRedis]:
    redis = SilentRedis()
    try:
        yield redis
    finally:
        redis.close()


def failing_calls(layer: RedisChannelLayer, count: int) -> list[tuple[type, float]]:
    """(exception type, seconds until it came) of ``count`` sends made at once and one
    group_add (redis-py's client, not the pipelined connection)."""

    def timed(call, *args) -> tuple[type, float]:
        started = time.monotonic()
        try:
            call(*args)
        except Exception as error:
            return type(error), time.monotonic() - started
        return type(None), time.monotonic() - started

    calls = [gevent.spawn(timed, layer.send, "jobs", {"n": n}) for n in range(count)]
    calls.append(gevent.spawn(timed, layer.group_add, "room", "jobs.1"))
    gevent.joinall(calls, timeout=15, raise_error=True)
    return [call.value for call in calls]


def test_sends_to_a_silent_redis_fail_within_the_default_socket_timeout(silent, log):
    layer = silent.layer()
    try:
        outcomes = failing_calls(layer, 20)
    finally:
        layer.close()
    assert {kind for kind, _ in outcomes} == {ChannelLayerUnavailable}
    # Each caller waits one socket timeout, not one per batch queued ahead of it, nor
    # one per retry of redis-py.
    assert all(SOCKET_TIMEOUT - 0.1 < seconds < SOCKET_TIMEOUT + 1 for _, seconds in outcomes)
    assert "Timeout reading from socket" in lines(log, "; retrying with back-off")[0]


def test_connection_kwargs_set_the_socket_timeout(silent):
    layer = silent.layer(socket_timeout=0.3)
    try:
        outcomes = failing_calls(layer, 5)
    finally:
        layer.close()
    assert {kind for kind, _ in outcomes} == {ChannelLayerUnavailable}
    assert all(seconds < 1.0 for _, seconds in outcomes), outcomes


def test_a_handshake_whose_consumer_meets_a_silent_redis_gets_503_before_its_timeout(silent):
    with live_server([route("websocket.connect", join_room)], layer=silent.layer()) as server:
        status, seconds = handshake_status(server)
        silent.close()  # refused from now on: the server's stop need not wait out timeouts
    assert status == 503
    assert seconds < 5.0 - 0.5  # the 403 of WEBSOCKET_HANDSHAKE_TIMEOUT would come at 5 s


def test_an_idle_blocking_receive_outlasts_the_socket_timeout(redis_url, log):
    """A blocking receive waits in Redis longer than the quick commands' socket timeout
    allows a reply to take: its connection has a timeout of its own."""
    layer = RedisChannelLayer(hosts=[redis_url], connection_kwargs={"socket_timeout": 0.2})
    try:
        started = time.monotonic()
        assert layer.receive(["idle"], block=True, timeout=1.0) == (None, None)
        assert time.monotonic() - started >= 1.0
        layer.send("idle", {"n": 1})
        assert layer.receive(["idle"], block=True, timeout=1.0) == ("idle", {"n": 1})
    finally:
        layer.flush()
        layer.close()
    assert not lines(log, "unreachable"), lines(log, "unreachable")
