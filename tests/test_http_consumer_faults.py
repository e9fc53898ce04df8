"""Routed HTTP (``http.request``) whose consumer fails, against the real server with a real
HTTP client: the client gets 500 (the consumer raised) or 503 (it could not reach the
channel layer: a real redis-server stopped mid-test) at once instead of at HTTP_TIMEOUT; a
streamed response whose consumer fails after it started is cut; the log shows the first
failure with its traceback, then counts. Also a server without a pool (``--noworker``):
a consumer of another pool that raises, and the server's own send into a stopped Redis.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from geventchannels import Channel, Group, logs
from geventchannels.routing import route
from tests.livesrv import live_server

from .test_redis_outage import (
    Outage,
    assert_no_traceback,
    assert_outage_logged_once,
    counted,
    lines,
    wait_until,
)
from .test_worker import Pool

pytestmark = pytest.mark.timeout(30)

#: Long enough that an answer within a second cannot be the HTTP_TIMEOUT one.
SLOW = {"HTTP_TIMEOUT": 20}


def get(server, path: str) -> tuple[int, bytes, float]:
    """(status, body, seconds until the whole response came) of one GET."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


@pytest.fixture
def log(caplog, monkeypatch) -> pytest.LogCaptureFixture:
    monkeypatch.setattr(logs, "TALLY_INTERVAL", 0.3)
    caplog.set_level(logging.WARNING, logger="geventchannels")
    return caplog


@pytest.fixture
def outage(monkeypatch) -> Iterator[Outage]:
    redis = Outage()
    try:
        yield redis
    finally:
        redis.redis.stop()


def raises(message) -> None:
    raise ValueError("boom")


def test_a_consumer_that_raises_gets_500_at_once_logged_once_then_counted(log):
    with live_server(
        [route("http.request", raises, path=r"^/fails/$")], raise_consumer_errors=False, **SLOW
    ) as server:
        answers = [get(server, "/fails/") for _ in range(5)]
        assert all(status == 500 and seconds < 1.0 for status, _, seconds in answers), answers
        assert b"failed to handle the request" in answers[0][1]
        wait_until(lambda: lines(log, "the same error"), what="the repeats counted")
    full = [r for r in log.records if r.exc_info is not None]
    assert len(full) == 1 and "error in consumer" in full[0].getMessage()
    (summary,) = lines(log, "the same error")
    assert summary.startswith("the same error 4 more times")
    assert "raises raised ValueError('boom') on http.request" in summary


def streams_then_raises(message) -> None:
    message.reply_channel.send(
        {"status": 200, "content": b"part one, ", "more_content": True}, immediately=True
    )
    raise ValueError("broke mid-response")


def test_a_streamed_response_whose_consumer_raises_is_cut():
    with live_server(
        [route("http.request", streams_then_raises, path=r"^/stream/$")],
        raise_consumer_errors=False,
        **SLOW,
    ) as server:
        started = time.monotonic()
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/stream/")
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        conn.close()
        assert time.monotonic() - started < 1.0
        assert cut.value.partial == b"part one, "


# -- Redis stopped: the consumers of this process fail calling the layer --------------------


def joins_a_group(message) -> None:
    Group("pollers").add(message.reply_channel)


def answers_and_logs(message) -> None:
    Channel("audit").send({"path": message["path"]})  # buffered: fails when it returns


@pytest.mark.redis
@pytest.mark.parametrize("consumer", [joins_a_group, answers_and_logs])
def test_a_consumer_that_cannot_reach_redis_gets_503_at_once(outage, log, consumer):
    layer = outage.layer()
    with live_server([route("http.request", consumer)], layer=layer, **SLOW) as server:
        outage.begin()
        answers = [get(server, f"/{n}/") for n in range(5)]
        assert all(status == 503 and seconds < 1.0 for status, _, seconds in answers), answers
        assert answers[0][1] == b"Service unavailable, try again later.\n"
        text = "could not reach the channel layer"
        wait_until(lambda: counted(log, text) == 5, what="5 counted failures")
        assert f"{consumer.__name__} on http.request" in lines(log, text)[0]
        assert_no_traceback(log)
        assert_outage_logged_once(log)


# -- no pool here (--noworker): another pool consumes, the server sends into Redis ---------


def answers(message) -> None:
    message.reply_channel.send({"status": 200, "content": b"served elsewhere"})


@contextmanager
def server_without_pool(outage: Outage) -> Iterator:
    """A live server without consumers and a pool on a layer of its own (another
    process's, in effect), which runs its routed requests through Redis."""
    routes = [route("http.request", raises, path=r"^/fails/$"), route("http.request", answers)]
    with Pool(routes, layer=outage.layer(), concurrency=4) as pool:
        with live_server(
            routes, layer=outage.layer(), run_worker=False, raise_consumer_errors=False, **SLOW
        ) as server:
            yield server
        pool.layer.close()


@pytest.mark.redis
def test_without_a_pool_failures_are_answered_at_once(outage, log):
    with server_without_pool(outage) as server:
        status, body, _ = get(server, "/")
        assert (status, body) == (200, b"served elsewhere")
        status, _, seconds = get(server, "/fails/")  # the other pool's answer, through Redis
        assert status == 500 and seconds < 1.0

        outage.begin()
        answers = [get(server, f"/{n}/") for n in range(5)]
        assert all(status == 503 and seconds < 1.0 for status, _, seconds in answers), answers
        refused = "routed HTTP request(s) answered 503: http.request could not be sent"
        wait_until(lambda: counted(log, refused) == 5, what="5 counted refusals")
        assert "is unreachable" in lines(log, refused)[0]
        tracebacks = [r for r in log.records if r.exc_info is not None]
        assert [r.exc_info[0] for r in tracebacks] == [ValueError]  # /fails/, not the outage
        assert_outage_logged_once(log, layers=2)  # the server's and the pool's
