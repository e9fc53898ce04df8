"""Autobahn 2.x: pings and pongs (RFC 6455 5.5.2, 5.5.3).

A ping must be answered by a pong carrying the same application data; control frames
carry at most 125 bytes (5.5); an unsolicited pong is allowed and gets no answer.
"""

from __future__ import annotations

import pytest

from tests.livesrv import live_server

from .consumers import ECHO_ROUTING
from .rawclient import OP_PING, OP_PONG, OP_TEXT, RawWebSocket, encode_frame

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(
    "payload",
    [b"", b"Hello, world!", b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", b"*" * 125],
    ids=["2.1-empty", "2.2-text", "2.3-binary", "2.4-125-bytes"],
)
def test_2_1_to_2_4_ping_is_answered_with_same_payload(ws, payload):
    ws.send_frame(OP_PING, payload)
    frame = ws.recv_frame()
    assert (frame.opcode, frame.fin, frame.payload) == (OP_PONG, True, payload)


@pytest.mark.parametrize("length", [126, 1000, 65536])
def test_2_5_ping_longer_than_125_bytes_fails_with_1002(ws, length):
    ws.send_frame(OP_PING, b"x" * length)
    ws.fail_with(1002)


def test_2_6_ping_written_one_octet_at_a_time_is_answered(ws):
    payload = bytes(range(125))
    for byte in encode_frame(OP_PING, payload):
        ws.send_raw(bytes([byte]))
    frame = ws.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_PONG, payload)


@pytest.mark.parametrize("payload", [b"", b"unsolicited pong payload"], ids=["2.7", "2.8"])
def test_2_7_2_8_unsolicited_pong_is_ignored(ws, payload):
    """Nothing answers the pong; the connection keeps working (proved by an echo)."""
    ws.send_frame(OP_PONG, payload)
    ws.send_text("still here")
    frame = ws.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"still here")


def test_2_9_unsolicited_pong_then_ping_answers_only_the_ping(ws):
    ws.send_frame(OP_PONG, b"unsolicited")
    ws.send_frame(OP_PING, b"solicited")
    frame = ws.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_PONG, b"solicited")


@pytest.mark.parametrize("chopped", [False, True], ids=["2.10", "2.11"])
def test_2_10_2_11_many_pings_in_a_row_are_all_answered_in_order(ws, chopped):
    payloads = [b"payload-%d" % i for i in range(50)]
    data = b"".join(encode_frame(OP_PING, p) for p in payloads)
    if chopped:
        for start in range(0, len(data), 7):
            ws.send_raw(data[start : start + 7])
    else:
        ws.send_raw(data)
    answered = []
    for _ in payloads:
        frame = ws.recv_frame()
        assert frame.opcode == OP_PONG
        answered.append(frame.payload)
    assert answered == payloads


def test_2_x_ping_between_messages_keeps_message_order(ws):
    ws.send_raw(
        encode_frame(OP_TEXT, "one") + encode_frame(OP_PING, b"p") + encode_frame(OP_TEXT, "two")
    )
    seen = [ws.recv_frame() for _ in range(3)]
    assert [f.payload for f in seen if f.opcode == OP_TEXT] == [b"one", b"two"]
    assert [f.payload for f in seen if f.opcode == OP_PONG] == [b"p"]


@pytest.fixture(scope="module")
def pinging_server():
    """An echo server that pings after 0.2 s of silence and wants the pong within 1 s."""
    with live_server(
        ECHO_ROUTING, WEBSOCKET_PING_INTERVAL=0.2, WEBSOCKET_PING_TIMEOUT=1.0
    ) as server:
        yield server


def test_server_keepalive_ping_is_valid_and_a_pong_keeps_the_connection(pinging_server):
    with RawWebSocket.connect(pinging_server.host, pinging_server.port, "/echo/") as ws:
        for _ in range(3):
            ping = ws.recv_frame(timeout=3)
            assert ping.opcode == OP_PING and len(ping.payload) <= 125
            ws.send_frame(OP_PONG, ping.payload)
        ws.send_text("alive")
        assert ws.recv_text() == "alive"


def test_unanswered_keepalive_ping_fails_with_1011(pinging_server):
    with RawWebSocket.connect(pinging_server.host, pinging_server.port, "/echo/") as ws:
        assert ws.recv_frame(timeout=3).opcode == OP_PING
        close = ws.expect_close(timeout=5, allow=(OP_PING,))
        assert close.close_code == 1011
        assert ws.wait_tcp_close() == b""
