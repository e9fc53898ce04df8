"""WebSocket connections through the real server, with websocket-client as the client:
handshake outcomes, echo through routed consumers, close codes, order keys, access log."""

from __future__ import annotations

import base64
import logging
import os
import random
import socket
import struct
import time

import gevent
import pytest
import websocket
from django.test import override_settings

from geventchannels.channel import Channel, Group
from geventchannels.layers.inmemory import InMemoryChannelLayer
from geventchannels.routing import route
from tests.livesrv import Recorder, live_server

pytestmark = pytest.mark.timeout(30)


def echo(message) -> None:
    if message.get("text") is not None:
        message.reply_channel.send({"text": message["text"]})
    else:
        message.reply_channel.send({"bytes": message["bytes"]})


def refuse(message) -> None:
    message.reply_channel.send({"accept": False})


def welcome(message) -> None:
    message.reply_channel.send({"text": "welcome"})


def ignore(message) -> None:
    pass


def close_with_code(message) -> None:
    Channel(message["reply_channel"]).send({"close": int(message["text"])})


def both_text_and_bytes(message) -> None:
    message.reply_channel.send({"text": "a", "bytes": b"b"})


def connect(server, path: str = "/", **kwargs) -> websocket.WebSocket:
    return websocket.create_connection(server.ws_url + path, timeout=5, **kwargs)


def close_frame_code(ws: websocket.WebSocket) -> int:
    """Read until the server's close frame and return its code."""
    while True:
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", frame.data[:2])[0]


@pytest.fixture(scope="module")
def server():
    disconnects = Recorder()
    connects = Recorder(reply={"accept": True})
    routing = [
        route("websocket.connect", refuse, path=r"^/refuse/$"),
        route("websocket.connect", welcome, path=r"^/welcome/$"),
        route("websocket.connect", ignore, path=r"^/silent/$"),
        route("websocket.connect", connects, path=r"^/recorded/$"),
        route("websocket.receive", close_with_code, path=r"^/close/$"),
        route("websocket.receive", both_text_and_bytes, path=r"^/both/$"),
        route("websocket.receive", echo),
        route("websocket.disconnect", disconnects),
    ]
    with live_server(routing, WEBSOCKET_HANDSHAKE_TIMEOUT=0.3) as srv:
        srv.disconnects = disconnects
        srv.connects = connects
        yield srv


def test_text_and_binary_echo(server):
    ws = connect(server, "/echo/")
    try:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send_binary(b"\x00\xffbin")
        assert ws.recv() == b"\x00\xffbin"
        for index in range(50):
            ws.send(f"m{index}")
        assert [ws.recv() for _ in range(50)] == [f"m{i}" for i in range(50)]
    finally:
        ws.close()


def test_refused_handshake_is_403(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(server, "/refuse/")
    assert refused.value.status_code == 403


def test_text_reply_to_connect_accepts_implicitly(server):
    ws = connect(server, "/welcome/")
    try:
        assert ws.recv() == "welcome"
    finally:
        ws.close()


def test_unanswered_handshake_times_out_with_403(server):
    started = gevent.get_hub().loop.now()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(server, "/silent/")
    assert refused.value.status_code == 403
    assert gevent.get_hub().loop.now() - started < 3


def test_connect_message_has_the_asgi_keys(server):
    ws = connect(server, "/recorded/?room=1&x=%20", header=["X-Dup: one", "X-Dup: two"])
    ws.close()
    message = server.connects.wait_for()
    assert message["path"] == "/recorded/"
    assert message["query_string"] == b"room=1&x=%20"
    assert message["scheme"] == "ws"
    assert message["order"] == 0
    assert message["root_path"] == ""
    assert message["client"][0] == "127.0.0.1"
    assert message["server"] == ["127.0.0.1", server.port]
    assert [b"x-dup", b"one"] in message["headers"]
    assert [b"x-dup", b"two"] in message["headers"]
    assert message["reply_channel"].startswith(server.app.reply_prefix)


def test_client_close_code_reaches_the_disconnect_consumer(server):
    ws = connect(server, "/echo/")
    ws.send("hi")
    assert ws.recv() == "hi"
    ws.close(status=4001)
    message = server.disconnects.wait_for(lambda m: m["code"] == 4001)
    assert message["path"] == "/echo/"


def test_consumer_close_code_reaches_the_client(server):
    ws = connect(server, "/close/")
    try:
        ws.send("4002")
        assert close_frame_code(ws) == 4002
    finally:
        ws.close()
    server.disconnects.wait_for(lambda m: m["code"] == 4002)


def test_order_keys_count_from_connect_to_disconnect():
    received = Recorder()
    ended = Recorder()
    with live_server(
        [route("websocket.receive", received), route("websocket.disconnect", ended)]
    ) as srv:
        ws = connect(srv, "/order/")
        for index in range(10):
            ws.send(str(index))
        received.wait_count(10)
        ws.close()
        last = ended.wait_for()
    assert [m["order"] for m in received.messages] == list(range(1, 11))
    assert [m["text"] for m in received.messages] == [str(i) for i in range(10)]
    assert last["order"] == 11
    assert last["code"] == 1000


def test_reply_with_text_and_bytes_is_refused_and_logged(server, caplog):
    ws = connect(server, "/both/")
    try:
        with caplog.at_level(logging.ERROR, logger="geventchannels.server.websocket"):
            ws.send("go")
            deadline = gevent.get_hub().loop.now() + 5
            while not any("both 'text' and 'bytes'" in r.getMessage() for r in caplog.records):
                assert gevent.get_hub().loop.now() < deadline, "no error logged"
                gevent.sleep(0.01)
        ws.send("still open")  # the connection survives a refused reply
    finally:
        ws.close()


def test_full_connect_channel_answers_503():
    layer = InMemoryChannelLayer(channel_capacity={"websocket.connect": 1})
    with live_server([], layer=layer, run_worker=False, WEBSOCKET_HANDSHAKE_TIMEOUT=2) as srv:
        waiting = gevent.spawn(connect, srv, "/a/")
        try:
            deadline = gevent.get_hub().loop.now() + 5
            while layer.channel_statistics("websocket.connect")["messages_pending"] < 1:
                assert gevent.get_hub().loop.now() < deadline
                gevent.sleep(0.01)
            with pytest.raises(websocket.WebSocketBadStatusException) as busy:
                connect(srv, "/b/")
            assert busy.value.status_code == 503
        finally:
            waiting.kill()


def test_subprotocol_from_the_settings_is_negotiated():
    with override_settings(CHANNELS_WS_PROTOCOLS=["v2.chat", "v1.chat"]), live_server([]) as srv:
        ws = connect(srv, "/", subprotocols=["v1.chat", "v2.chat"])
        try:
            assert ws.getsubprotocol() == "v2.chat"
        finally:
            ws.close()


def test_graceful_stop_closes_websockets_with_the_given_code():
    with live_server([]) as srv:
        ws = connect(srv, "/")
        stopper = gevent.spawn(srv.app.stop, 2.0, 1012)
        assert close_frame_code(ws) == 1012
        ws.close()
        stopper.join(5)
        assert stopper.dead
        assert srv.app.websocket_count == 0


def test_access_log_lines(server, caplog):
    with caplog.at_level(logging.INFO, logger="geventchannels.server.access"):
        ws = connect(server, "/echo/")
        ws.close()
        with pytest.raises(websocket.WebSocketBadStatusException):
            connect(server, "/refuse/")
        server.disconnects.wait_for(lambda m: m["path"] == "/echo/")
        deadline = gevent.get_hub().loop.now() + 5
        while True:
            lines = [
                r.getMessage() for r in caplog.records if r.name == "geventchannels.server.access"
            ]
            if any(line.startswith("WebSocket DISCONNECT /echo/ [127.0.0.1:") for line in lines):
                break
            assert gevent.get_hub().loop.now() < deadline, lines
            gevent.sleep(0.01)
    for event in (
        "HANDSHAKING /echo/",
        "CONNECT /echo/",
        "HANDSHAKING /refuse/",
        "REJECT /refuse/",
    ):
        assert any(line.startswith("WebSocket " + event + " [127.0.0.1:") for line in lines), (
            event,
            lines,
        )


def test_frames_sent_right_behind_the_handshake_are_not_lost(server):
    """A client that does not wait for the 101 before its first frame (pywsgi's reader
    may have buffered that frame with the request)."""
    key = base64.b64encode(os.urandom(16)).decode()
    payload = b"early bird"
    mask = os.urandom(4)
    frame = (
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    )
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(
            (
                "GET /early/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key
            ).encode()
            + frame
        )
        received = b""
        while not received.endswith(payload):
            chunk = sock.recv(4096)
            assert chunk, "connection closed; got %r" % received
            received += chunk
    assert received.startswith(b"HTTP/1.1 101 ")
    assert received.endswith(bytes([0x81, len(payload)]) + payload)


def _client_frame(
    opcode: int,
    payload: bytes,
    fin: bool = True,
    long_length: bool = False,
    rng: random.Random | None = None,
    rsv: int = 0,
) -> bytes:
    """A masked client frame; ``long_length`` encodes a short length in 16 bits (legal
    on the wire, not the shortest form); ``rsv`` 4 sets RSV1 (compressed)."""
    mask = bytes((rng or random).getrandbits(8) for _ in range(4))
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    length = len(payload)
    if length < 126 and not long_length:
        header = bytes((first, 0x80 | length))
    elif length < 65536:
        header = bytes((first, 0x80 | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, 0x80 | 127)) + struct.pack("!Q", length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _reference_messages(frames) -> list:
    """Whole messages from websockets' own frame events (text decoded)."""
    messages, parts, text = [], None, False
    for opcode, data, fin in frames:
        if opcode in (1, 2):
            parts, text = [data], opcode == 1
        elif opcode == 0:
            parts.append(data)
        else:
            continue
        if fin:
            payload = b"".join(parts)
            messages.append(payload.decode() if text else payload)
    return messages


@pytest.mark.parametrize("seed", range(30))
def test_frame_engine_yields_the_messages_websockets_parses(seed):
    """The engine's own parser for simple frames and its reassembly must yield exactly
    the messages websockets' parser yields, for any mix of frames and any split of the
    byte stream, and answer (pongs, the failure's close frame) with the same bytes."""
    from websockets.protocol import OPEN
    from websockets.server import ServerProtocol

    from geventchannels.server.frames import FrameEngine

    rng = random.Random(seed)
    stream = b""
    for _ in range(rng.randint(1, 40)):
        kind = rng.random()
        size = rng.choice([0, 1, 5, 125, 126, 200, 1000, 70000])
        payload = bytes(rng.getrandbits(8) for _ in range(size))
        text = "".join(rng.choice("aé😀ß") for _ in range(size // 2)).encode()
        if kind < 0.3:
            stream += _client_frame(
                2, payload, rng=rng, long_length=rng.random() < 0.1 and size < 126
            )
        elif kind < 0.5:
            stream += _client_frame(1, text, rng=rng)
        elif kind < 0.6:
            stream += _client_frame(9, payload[:100], rng=rng)  # ping
        elif kind < 0.75:
            stream += _client_frame(2, payload[:50], fin=False, rng=rng)
            stream += _client_frame(9, payload[:10], rng=rng)  # a ping between fragments
            stream += _client_frame(0, payload[50:], fin=True, rng=rng)
        elif kind < 0.9:
            cut = rng.randrange(len(text) + 1)  # may split a character between fragments
            stream += _client_frame(1, text[:cut], fin=False, rng=rng)
            stream += _client_frame(0, text[cut:], fin=True, rng=rng)
        else:
            stream += _client_frame(2, payload, rng=rng) + bytes([0xC2, 0x80, 0, 0, 0, 0])
            break  # RSV1 set: a protocol error ends the stream
    limits = rng.choice([(None, None), (2000, 1000), (1 << 20, 1 << 20)])
    ours, reference = FrameEngine(*limits), ServerProtocol(state=OPEN, max_size=limits)
    _check_same_as_reference(ours, reference, stream, rng)
    assert ours.state == reference.state


def _check_same_as_reference(ours, reference, stream: bytes, rng: random.Random) -> None:
    """Feed ``stream`` to our engine and to websockets' protocol in the same random
    chunks: the same whole messages, the same failure, the same bytes in answer."""
    ours_messages, reference_frames = [], []
    position = 0
    while position < len(stream):
        step = rng.choice([1, 2, 7, 100, 4096, len(stream)])
        chunk = stream[position : position + step]
        position += step
        ours_messages.extend(ours.receive(chunk))
        reference.receive_data(chunk)
        reference_frames.extend(
            (f.opcode, bytes(f.data), f.fin) for f in reference.events_received()
        )
    assert ours_messages == _reference_messages(reference_frames)
    assert (ours.violation is not None) == (reference.close_sent is not None)
    ours.fail_violation()
    assert ours.data_to_send() == reference.data_to_send()


@pytest.mark.parametrize("long_length", [False, True])
def test_frame_engine_shortcut_never_starts_inside_a_frame(long_length):
    """A payload that looks like a frame, arriving after its header in a separate read,
    is payload (the zero mask makes the wire bytes equal to the payload)."""
    from geventchannels.server.frames import FrameEngine

    inner = _client_frame(1, b"evil")
    length = len(inner)
    header = (
        bytes((0x82, 0x80 | 126)) + struct.pack("!H", length)
        if long_length
        else bytes((0x82, 0x80 | length))
    )
    engine = FrameEngine(None, None)
    messages = engine.receive(header + b"\0\0\0\0")
    messages += engine.receive(inner)
    messages += engine.receive(_client_frame(1, b"after"))
    assert messages == [inner, "after"]


def test_frame_engine_defers_a_violation_after_the_messages_before_it():
    """Bytes that end in a protocol violation: the messages before it come out, the
    close frame waits for fail_violation(), and nothing after the violation is parsed."""
    from geventchannels.server.frames import FrameEngine

    engine = FrameEngine(None, None)
    bad = bytes([0xC1, 0x80, 0, 0, 0, 0])  # RSV1 on a text frame
    ping = _client_frame(9, b"after")
    assert engine.receive(_client_frame(1, b"one") + _client_frame(2, b"two") + bad + ping) == [
        "one",
        b"two",
    ]
    assert engine.violation is not None and engine.violation[0] == 1002
    assert engine.data_to_send() == []
    assert engine.receive(_client_frame(1, b"later")) == []
    engine.fail_violation()
    close, eof = engine.data_to_send()
    assert close[:4] == b"\x88" + bytes([len(close) - 2]) + b"\x03\xea" and eof == b""


@pytest.mark.parametrize(
    "frames",
    [
        [_client_frame(1, b"ok\xff")],
        [
            _client_frame(1, b"ok", fin=False),
            _client_frame(0, b"\xc3", fin=False),
            _client_frame(0, b"("),
        ],
    ],
    ids=["whole", "fragmented"],
)
def test_frame_engine_fails_invalid_utf8_with_1007(frames):
    from geventchannels.server.frames import FrameEngine

    engine = FrameEngine(None, None)
    assert engine.receive(_client_frame(1, b"fine") + b"".join(frames)) == ["fine"]
    assert engine.violation is not None and engine.violation[0] == 1007


def join_room(message) -> None:
    Group("room").add(message.reply_channel)
    message.reply_channel.send({"accept": True})


def test_group_send_reaches_every_socket_in_the_group():
    with live_server([route("websocket.connect", join_room)]) as srv:
        clients = [connect(srv, "/room/") for _ in range(5)]
        try:
            Group("room").send({"text": "to all"})
            assert [ws.recv() for ws in clients] == ["to all"] * 5
        finally:
            for ws in clients:
                ws.close()


def test_replies_to_every_message_before_a_violation_leave_before_the_close():
    """Twenty messages and a reserved opcode in one write: all twenty echoes, then 1002
    (the connection waits for one reply per message, ANSWER_PATIENCE at most)."""
    from tests.rfc6455.rawclient import OP_TEXT, RawWebSocket, encode_frame

    with live_server([route("websocket.receive", echo)]) as srv:
        with RawWebSocket.connect(srv.host, srv.port, "/") as ws:
            ws.send_raw(b"".join(encode_frame(OP_TEXT, f"m{i}") for i in range(20)) + b"\x83\x80")
            ws.send_raw(b"\0\0\0\0")
            assert [ws.recv_text() for _ in range(20)] == [f"m{i}" for i in range(20)]
            ws.fail_with(1002)


def test_a_consumer_that_does_not_answer_delays_the_failure_by_answer_patience_at_most(
    monkeypatch,
):
    from geventchannels.server import websocket as server_websocket
    from tests.rfc6455.rawclient import OP_TEXT, RawWebSocket, encode_frame

    monkeypatch.setattr(server_websocket, "ANSWER_PATIENCE", 0.3)
    seen = Recorder()
    with live_server([route("websocket.receive", seen)]) as srv:
        with RawWebSocket.connect(srv.host, srv.port, "/") as ws:
            started = time.monotonic()
            ws.send_raw(encode_frame(OP_TEXT, "unanswered") + encode_frame(OP_TEXT, "x", rsv=1))
            ws.fail_with(1002)
            assert 0.25 < time.monotonic() - started < 3
            assert seen.wait_for()["text"] == "unanswered"
