"""The server's limits over real sockets: message and frame size (1009), a client that
stops reading (outbound queue, 1008), keepalive pings (1011), MAX_CONNECTIONS (503), full
websocket.connect / receive / disconnect channels (wait for room, then 503 / 1013 / one
counted warning)."""

from __future__ import annotations

import http.client
import logging
import re
import socket
import struct
import time

import gevent
import pytest
import websocket

from geventchannels import logs
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.routing import route
from geventchannels.server import websocket as server_websocket
from tests.livesrv import Recorder, live_server

pytestmark = pytest.mark.timeout(30)

ABNF = websocket.ABNF


def echo(message) -> None:
    if message.get("text") is not None:
        message.reply_channel.send({"text": message["text"]})
    else:
        message.reply_channel.send({"bytes": message["bytes"]})


def connect(server, path: str = "/", **kwargs) -> websocket.WebSocket:
    return websocket.create_connection(server.ws_url + path, timeout=5, **kwargs)


def close_frame_code(ws: websocket.WebSocket) -> int:
    while True:
        frame = ws.recv_frame()
        if frame.opcode == ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", frame.data[:2])[0]


def send_fragmented(ws: websocket.WebSocket, data: bytes, size: int) -> None:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    for index, piece in enumerate(pieces):
        opcode = ABNF.OPCODE_BINARY if index == 0 else ABNF.OPCODE_CONT
        ws.send_frame(ABNF.create_frame(piece, opcode, fin=int(index == len(pieces) - 1)))


@pytest.fixture(scope="module")
def sized_server():
    ended = Recorder()
    with live_server(
        [route("websocket.receive", echo), route("websocket.disconnect", ended)],
        WEBSOCKET_MAX_MESSAGE_SIZE=1000,
        WEBSOCKET_MAX_FRAME_SIZE=400,
    ) as srv:
        srv.ended = ended
        yield srv


def test_message_within_both_limits_is_delivered(sized_server):
    ws = connect(sized_server)
    try:
        send_fragmented(ws, b"a" * 1000, 400)
        assert ws.recv() == b"a" * 1000
    finally:
        ws.close()


def test_message_over_the_size_limit_closes_1009(sized_server):
    ws = connect(sized_server, "/big-message/")
    try:
        send_fragmented(ws, b"b" * 1001, 300)
        assert close_frame_code(ws) == 1009
    finally:
        ws.close()
    sized_server.ended.wait_for(lambda m: m["path"] == "/big-message/" and m["code"] == 1009)


def test_frame_over_the_frame_limit_closes_1009(sized_server):
    ws = connect(sized_server, "/big-frame/")
    try:
        ws.send_binary(b"c" * 401)
        assert close_frame_code(ws) == 1009
    finally:
        ws.close()
    sized_server.ended.wait_for(lambda m: m["path"] == "/big-frame/" and m["code"] == 1009)


def flood(message) -> None:
    payload = b"f" * 65536
    reply = message.reply_channel
    for _ in range(2000):
        reply.send({"bytes": payload}, immediately=True)


def test_client_that_stops_reading_is_dropped_with_1008():
    ended = Recorder()
    with live_server(
        [route("websocket.receive", flood), route("websocket.disconnect", ended)],
        WEBSOCKET_OUTBOUND_QUEUE=8,
    ) as srv:
        ws = connect(srv, "/slow/", sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        started = time.monotonic()
        ws.send("go")  # and never read again
        assert ended.wait_for(timeout=10)["code"] == 1008
        assert time.monotonic() - started < 10
        ws.close()
        assert srv.app.websocket_count == 0


def test_silent_client_is_pinged_then_closed_1011():
    ended = Recorder()
    with live_server(
        [route("websocket.disconnect", ended)],
        WEBSOCKET_PING_INTERVAL=0.2,
        WEBSOCKET_PING_TIMEOUT=0.3,
    ) as srv:
        ws = connect(srv, "/mute/")  # never reads, so never answers the ping
        started = time.monotonic()
        assert ended.wait_for(timeout=5)["code"] == 1011
        assert time.monotonic() - started < 3
        frames = []
        while True:
            frame = ws.recv_frame()
            frames.append(frame.opcode)
            if frame.opcode == ABNF.OPCODE_CLOSE:
                assert struct.unpack("!H", frame.data[:2])[0] == 1011
                break
        assert ABNF.OPCODE_PING in frames
        ws.close()


def test_client_answering_pings_stays_connected():
    ended = Recorder()
    with live_server(
        [route("websocket.receive", echo), route("websocket.disconnect", ended)],
        WEBSOCKET_PING_INTERVAL=0.1,
        WEBSOCKET_PING_TIMEOUT=0.3,
    ) as srv:
        ws = connect(srv, "/alive/")
        pings = 0
        while pings < 6:  # 0.6 s of pings, each answered: longer than the ping timeout
            opcode, _ = ws.recv_data(control_frame=True)  # answers a ping with a pong
            assert opcode == ABNF.OPCODE_PING
            pings += 1
        ws.send("still here")
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == ABNF.OPCODE_TEXT:
                break
        assert data == b"still here"
        assert ended.messages == []
        ws.close()


def test_max_connections_answers_503_to_websockets_and_http():
    with live_server([], MAX_CONNECTIONS=2) as srv:
        first, second = connect(srv), connect(srv)
        with pytest.raises(websocket.WebSocketBadStatusException) as busy:
            connect(srv)
        assert busy.value.status_code == 503
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
        conn.request("GET", "/hello/")
        assert conn.getresponse().status == 503
        conn.close()
        first.close()
        deadline = time.monotonic() + 5
        while srv.app.connections > 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        third = connect(srv)
        third.close()
        second.close()


def test_receive_channel_that_stays_full_closes_1013():
    layer = InMemoryChannelLayer(channel_capacity={"websocket.receive": 2})
    with live_server([], layer=layer, run_worker=False) as srv:
        ws = connect_without_consumers(srv, layer)
        started = time.monotonic()
        for index in range(5):
            ws.send(f"m{index}")
        assert close_frame_code(ws) == 1013
        assert 0.5 < time.monotonic() - started < 5  # it waited for room first
        ws.close()


def test_a_fast_sender_is_slowed_down_not_dropped():
    layer = InMemoryChannelLayer(channel_capacity={"websocket.receive": 4})
    with live_server([route("websocket.receive", echo)], layer=layer, worker_concurrency=2) as srv:
        ws = connect(srv)
        for index in range(300):
            ws.send(f"m{index}")
        assert [ws.recv() for _ in range(300)] == [f"m{i}" for i in range(300)]
        ws.close()


def connect_without_consumers(server, layer) -> websocket.WebSocket:
    """Open a WebSocket on a server without a consumer pool: accept its connect here."""
    opened = gevent.spawn(connect, server)
    channel, message = layer.receive(["websocket.connect"], block=True, timeout=5)
    assert channel == "websocket.connect"
    layer.send(message["reply_channel"], {"accept": True})
    return opened.get(timeout=5)


def slow_accept(message) -> None:
    gevent.sleep(0.03)  # a consumer that takes a while, so the connect channel fills up
    message.reply_channel.send({"accept": True})


def test_a_burst_of_handshakes_waits_for_room_in_the_connect_channel():
    layer = InMemoryChannelLayer(channel_capacity={"websocket.connect": 2})
    with live_server(
        [route("websocket.connect", slow_accept)], layer=layer, worker_concurrency=1
    ) as srv:
        opening = [gevent.spawn(connect, srv, f"/burst/{index}/") for index in range(8)]
        gevent.joinall(opening, timeout=10, raise_error=True)
        sockets = [greenlet.value for greenlet in opening]
        assert all(ws.connected for ws in sockets)
        assert layer.channel_statistics("websocket.connect")["channel_full_count"] > 0
        for ws in sockets:
            ws.close()


def test_a_connect_channel_that_stays_full_answers_503_after_the_wait():
    layer = InMemoryChannelLayer(channel_capacity={"websocket.connect": 1})
    with live_server([], layer=layer, run_worker=False, WEBSOCKET_HANDSHAKE_TIMEOUT=0.5) as srv:
        unanswered = gevent.spawn(connect, srv)  # fills the channel: nobody consumes it
        wait_for_full = time.monotonic() + 5
        while not layer.channel_statistics("websocket.connect")["messages_pending"]:
            assert time.monotonic() < wait_for_full
            gevent.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(websocket.WebSocketBadStatusException) as busy:
            connect(srv)
        assert busy.value.status_code == 503
        assert 0.4 < time.monotonic() - started < 3  # waited the handshake timeout, no more
        with pytest.raises(websocket.WebSocketBadStatusException):
            unanswered.get(timeout=5)


def test_disconnects_that_find_no_room_are_logged_as_one_counted_line(monkeypatch, caplog):
    monkeypatch.setattr(server_websocket, "DISCONNECT_PATIENCE", 0.1)
    monkeypatch.setattr(logs, "TALLY_INTERVAL", 0.3)
    layer = InMemoryChannelLayer(channel_capacity={"websocket.disconnect": 1})
    caplog.set_level(logging.WARNING, logger="geventchannels.server")
    with live_server([], layer=layer, run_worker=False) as srv:
        sockets = [connect_without_consumers(srv, layer) for _ in range(6)]
        for ws in sockets:
            ws.close()
        deadline = time.monotonic() + 10
        while True:
            lines = [
                r.getMessage()
                for r in caplog.records
                if "websocket.disconnect of" in r.getMessage()
            ]
            counts = [int(re.search(r"of (\d+) WebSocket", line).group(1)) for line in lines]
            if sum(counts) >= 5:
                break
            assert time.monotonic() < deadline, lines
            gevent.sleep(0.02)
        assert sum(counts) == 5  # the first disconnect fitted in the channel
        assert len(lines) <= 2  # the first at once, the rest counted in one line
