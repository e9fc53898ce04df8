"""The accept path while every consumer greenlet is stuck, and connect consumers that
fail, against the real server: a handshake no consumer could take gets 503 (and never
runs), one whose consumer ran without answering keeps 403, one whose consumer raised is
refused at once with 500; new handshakes succeed once the pool is free again.
"""

from __future__ import annotations

import logging

import pytest
import websocket
from gevent.event import Event

from geventchannels import logs
from geventchannels.exceptions import DenyConnection
from geventchannels.routing import route
from tests.livesrv import live_server

from .test_redis_outage import connect, counted, handshake_status, wait_until

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 0.5


def test_a_handshake_no_consumer_could_take_gets_503_and_never_runs(caplog, monkeypatch):
    monkeypatch.setattr(logs, "TALLY_INTERVAL", 0.3)
    caplog.set_level(logging.WARNING, logger="geventchannels")
    gate = Event()
    stuck, connects = [], []

    def accept(message) -> None:
        connects.append(message["path"])
        message.reply_channel.send({"accept": True})

    def never_returns(message) -> None:
        stuck.append(message["text"])
        gate.wait(20)

    routes = [route("websocket.connect", accept), route("websocket.receive", never_returns)]
    with live_server(routes, worker_concurrency=2, WEBSOCKET_HANDSHAKE_TIMEOUT=TIMEOUT) as server:
        sockets = [connect(server, f"/busy{n}/") for n in range(2)]
        for ws in sockets:
            ws.send("hold")
        wait_until(lambda: len(stuck) == 2, what="every consumer greenlet busy")

        for n in range(3):
            status, seconds = handshake_status(server, f"/waiting{n}/")
            assert status == 503, status
            assert TIMEOUT * 0.9 < seconds < TIMEOUT + 0.5
        text = "no consumer took websocket.connect within the handshake timeout"
        wait_until(lambda: counted(caplog, text) == 3, what="3 counted refusals")

        gate.set()
        ws = connect(server, "/after/")
        ws.close()
        # The refused handshakes were taken back: their consumer never ran.
        assert connects == ["/busy0/", "/busy1/", "/after/"]
        for ws in sockets:
            ws.close()


def test_a_handshake_whose_consumer_ran_without_answering_still_gets_403():
    ran = []
    with live_server(
        [route("websocket.connect", lambda message: ran.append(1))],
        WEBSOCKET_HANDSHAKE_TIMEOUT=TIMEOUT,
    ) as server:
        status, seconds = handshake_status(server)
        assert (status, bool(ran)) == (403, True)
        assert TIMEOUT * 0.9 < seconds < TIMEOUT + 0.5


def test_a_connect_consumer_that_raises_refuses_the_handshake_at_once_with_500(caplog):
    def broken(message) -> None:
        if message["path"] == "/broken/":
            raise ValueError("no such room")
        message.reply_channel.send({"accept": True})

    with live_server(
        [route("websocket.connect", broken)],
        raise_consumer_errors=False,
        WEBSOCKET_HANDSHAKE_TIMEOUT=5,
    ) as server:
        for _ in range(3):
            status, seconds = handshake_status(server, "/broken/")
            assert status == 500 and seconds < 1.0, (status, seconds)
        errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ValueError]
        assert len(errors) == 1  # the repeats are counted (test_consumer_faults.py)
        connect(server, "/fine/").close()


def test_a_connect_consumer_that_denies_still_gets_403():
    def deny(message) -> None:
        raise DenyConnection()

    with live_server([route("websocket.connect", deny)]) as server:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            connect(server)
        assert refused.value.status_code == 403
