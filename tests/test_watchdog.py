"""The consumer pool's watchdogs: CONSUMER_TIMEOUT stops a consumer that never returns
and frees its slot; BLOCKED_LOOP_WARNING names a consumer that blocks the event loop."""

from __future__ import annotations

import http.client
import logging
import time

import gevent
import pytest
import websocket
from django.db import connection, connections
from gevent import get_hub
from gevent.event import Event

from geventchannels import Channel, logs
from geventchannels.routing import route

from .livesrv import Recorder, live_server
from .test_worker import Pool, wait_for

pytestmark = pytest.mark.timeout(30)

SHORT = {"CONSUMER_TIMEOUT": 0.3}


def sleeps_forever(message):
    Channel("out", channel_layer=message.channel_layer).send({"lost": True})
    try:
        gevent.sleep(60)
    except Exception:  # the deadline is not an Exception: this cannot swallow it
        pass
    message.reply_channel.send({"text": "never"})


def stopped_warnings(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "geventchannels.worker" and "CONSUMER_TIMEOUT" in r.getMessage()
    ]


def test_a_consumer_past_the_deadline_is_stopped_and_its_slot_serves_the_next(caplog):
    caplog.set_level(logging.WARNING, logger="geventchannels.worker")
    seen = Recorder()
    routes = [route("stuck", sleeps_forever), route("jobs", seen)]
    with Pool(routes, concurrency=1, overrides=SHORT) as pool:
        started = time.monotonic()
        pool.layer.send("stuck", {"reply_channel": "reply.1"})
        wait_for(lambda: pool.worker._calls.running)
        pool.layer.send("jobs", {"n": 1})
        seen.wait_for(timeout=5)
        took = time.monotonic() - started
        assert pool.worker._watchdog.deadline.stopped_count == 1
        assert pool.worker._calls.running == {}
        # Its buffered sends were dropped; nothing after the sleep ran.
        assert pool.layer.receive(["out", "reply.1"]) == (None, None)
    assert 0.3 <= took < 2.0
    (record,) = stopped_warnings(caplog)
    text = record.getMessage()
    assert "consumer tests.test_watchdog.sleeps_forever ran 0." in text
    assert "on stuck, past CONSUMER_TIMEOUT (0.3 s)" in text
    # Its stack, from the pool's call down to where it waited.
    assert "in handle" in text and "consumer(message, **kwargs)" in text
    assert "in sleeps_forever\n    gevent.sleep(60)" in text
    assert record.exc_info is None


def test_repeated_deadlines_of_one_consumer_give_one_stack_then_counts(caplog, monkeypatch):
    monkeypatch.setattr(logs, "TALLY_INTERVAL", 0.3)
    caplog.set_level(logging.WARNING, logger="geventchannels.worker")
    with Pool(
        [route("stuck", sleeps_forever)], concurrency=5, overrides={"CONSUMER_TIMEOUT": 0.2}
    ) as pool:
        for n in range(10):
            pool.layer.send("stuck", {"n": n, "reply_channel": f"reply.{n}"})

        def counted() -> int:
            lines = [r.getMessage() for r in stopped_warnings(caplog)]
            return sum(int(line.split()[0]) for line in lines if "more consumers" in line)

        wait_for(lambda: counted() == 9)
        assert pool.worker._watchdog.deadline.stopped_count == 10
    records = stopped_warnings(caplog)
    full = [r for r in records if "Where it was" in r.getMessage()]
    assert len(full) == 1
    assert all("tests.test_watchdog.sleeps_forever on stuck" in r.getMessage() for r in records[1:])
    assert len(records) <= 4


def test_a_pool_whose_every_consumer_is_stuck_serves_again_after_the_deadline():
    """As in issue 14: as many stuck consumers as the pool has greenlets. The handshake
    that comes then waits for a free greenlet and is answered once the deadline frees one."""
    with live_server(
        [route("websocket.receive", sleeps_forever)],
        worker_concurrency=3,
        CONSUMER_TIMEOUT=0.5,
    ) as server:
        stuck = []
        for _ in range(3):
            ws = websocket.create_connection(server.ws_url + "/", timeout=5)
            ws.send("hang")
            stuck.append(ws)
        wait_for(lambda: len(server.app.worker._calls.running) == 3)
        started = time.monotonic()
        fresh = websocket.create_connection(server.ws_url + "/", timeout=5)
        took = time.monotonic() - started
        fresh.close()
        for ws in stuck:
            ws.close()
    assert 0.2 <= took < 3.0


def test_a_stopped_websocket_connect_consumer_refuses_the_handshake_at_once():
    with live_server(
        [route("websocket.connect", sleeps_forever)],
        CONSUMER_TIMEOUT=0.3,
        WEBSOCKET_HANDSHAKE_TIMEOUT=10,
    ) as server:
        started = time.monotonic()
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(server.ws_url + "/", timeout=5)
        took = time.monotonic() - started
    assert refused.value.status_code == 500
    assert took < 2.0


def test_a_stopped_connect_consumer_that_had_accepted_closes_its_socket_with_1011():
    def accepts_then_hangs(message):
        message.reply_channel.send({"accept": True}, immediately=True)
        gevent.sleep(60)

    with live_server(
        [route("websocket.connect", accepts_then_hangs)], CONSUMER_TIMEOUT=0.3
    ) as server:
        ws = websocket.create_connection(server.ws_url + "/", timeout=5)
        frame = ws.recv_frame()
        ws.close()
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1011


def test_a_stopped_http_request_consumer_gets_503_at_once():
    with live_server(
        [route("http.request", sleeps_forever, path=r"^/stuck/$")],
        CONSUMER_TIMEOUT=0.3,
        HTTP_TIMEOUT=10,
    ) as server:
        started = time.monotonic()
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("GET", "/stuck/")
        response = conn.getresponse()
        body = response.read()
        took = time.monotonic() - started
        conn.close()
    assert response.status == 503
    assert b"try again later" in body  # the same answer as any consumer that could not finish
    assert took < 2.0


def test_a_call_that_ended_is_never_stopped_in_its_greenlet_s_next_call():
    """The watch decides in one greenlet and throws from the hub later: by then the
    greenlet may run another message, which must go on."""
    release_first, release_second = Event(), Event()
    done = Recorder()

    def first(message):
        release_first.wait(10)

    def second(message):
        release_second.wait(10)
        done(message)

    routes = [route("first", first), route("second", second)]
    with Pool(routes, concurrency=1, overrides={"CONSUMER_TIMEOUT": 60}) as pool:
        calls, watch = pool.worker._calls, pool.worker._watchdog.deadline
        pool.layer.send("first", {})
        wait_for(lambda: len(calls.running) == 1)
        ((greenlet, entry_of_first),) = calls.running.items()
        pool.layer.send("second", {})
        release_first.set()
        wait_for(lambda: calls.running.get(greenlet, entry_of_first) is not entry_of_first)
        get_hub().loop.run_callback(watch._throw, greenlet, entry_of_first)
        gevent.sleep(0.05)
        release_second.set()
        done.wait_for(timeout=5)
        assert watch.stopped_count == 0


def test_the_deadline_closes_the_database_connection_it_cut_short(monkeypatch, tmp_path):
    """With persistent connections (CONN_MAX_AGE None) the pool greenlet would reuse the
    connection of an interrupted query. (A file: Django never closes an in-memory one.)"""
    monkeypatch.setitem(connections.settings["default"], "NAME", str(tmp_path / "db.sqlite3"))
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", None)
    seen = []

    def queries_then_hangs(message):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        seen.append(connection.connection)
        gevent.sleep(60)

    def looks(message):
        seen.append(connection.connection)

    routes = [route("stuck", queries_then_hangs), route("jobs", looks)]
    with Pool(routes, concurrency=1, overrides=SHORT) as pool:
        pool.layer.send("stuck", {})
        wait_for(lambda: seen)
        pool.layer.send("jobs", {})
        wait_for(lambda: len(seen) == 2)
    assert seen[0] is not None
    assert seen[1] is None


def test_a_zero_timeout_runs_no_deadline():
    with Pool(
        [route("jobs", Recorder())], concurrency=1, overrides={"CONSUMER_TIMEOUT": 0}
    ) as pool:
        assert pool.worker._watchdog.deadline is None


# -- the blocked event loop ------------------------------------------------------------

BUSY = {"until": 0.0, "ended": 0.0}


def busy_loop(message):
    BUSY["until"] = time.monotonic() + message["seconds"]
    while time.monotonic() < BUSY["until"]:
        pass
    BUSY["ended"] = time.monotonic()


def blocked_warnings(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "geventchannels.worker" and "event loop has not run" in r.getMessage()
    ]


def test_a_consumer_that_blocks_the_loop_is_named_once_while_it_blocks(caplog):
    caplog.set_level(logging.WARNING, logger="geventchannels.worker")
    overrides = {"BLOCKED_LOOP_WARNING": 0.3, "CONSUMER_TIMEOUT": 0.2}
    with Pool([route("jobs", busy_loop)], concurrency=2, overrides=overrides) as pool:
        BUSY["ended"] = 0.0
        pool.layer.send("jobs", {"seconds": 1.0})
        wait_for(lambda: BUSY["ended"])
        gevent.sleep(0.2)  # a loop that runs again is no new episode
    (record,) = blocked_warnings(caplog)
    assert record.created < time.time() - (time.monotonic() - BUSY["ended"])
    text = record.getMessage()
    assert "(BLOCKED_LOOP_WARNING 0.3 s): consumer tests.test_watchdog.busy_loop on jobs" in text
    assert "in busy_loop\n    while time.monotonic() < BUSY" in text
    # A consumer that never yields cannot be stopped: the deadline did not act.
    assert not stopped_warnings(caplog)


def test_the_warning_waits_for_a_logging_lock_the_blocking_code_holds(caplog):
    """The warning is logged from a native thread; the handlers' locks are gevent locks
    (monkey-patched threading). Held by the blocked loop, the thread waits for them,
    then logs: no deadlock, no crash."""
    caplog.set_level(logging.WARNING, logger="geventchannels.worker")
    handler = caplog.handler
    released = {}

    def holds_the_lock(message):
        handler.acquire()
        try:
            busy_loop(message)
        finally:
            released["at"] = time.time()
            handler.release()

    overrides = {"BLOCKED_LOOP_WARNING": 0.3}
    with Pool([route("jobs", holds_the_lock)], concurrency=1, overrides=overrides) as pool:
        pool.layer.send("jobs", {"seconds": 1.0})
        wait_for(lambda: blocked_warnings(caplog))
    (record,) = blocked_warnings(caplog)
    assert "consumer tests.test_watchdog.test_the_warning_waits" in record.getMessage()
    assert record.created < released["at"]
