"""Autobahn 9.x (bounded): many messages, large fragmented messages and the size limits.

The server bounds what one client can make it buffer (WEBSOCKET_MAX_FRAME_SIZE,
WEBSOCKET_MAX_MESSAGE_SIZE); over either it fails the connection with 1009 "message too
big" (RFC 6455 7.4.1). Sizes here stay near 1 MiB so the whole directory runs in seconds.
"""

from __future__ import annotations

import random

import pytest

from geventchannels.layers.inmemory import InMemoryChannelLayer
from tests.livesrv import live_server

from .consumers import ECHO_ROUTING
from .rawclient import OP_BINARY, OP_CONTINUATION, OP_TEXT, RawWebSocket, encode_frame

pytestmark = pytest.mark.timeout(30)

LETTERS = bytes(ord("a") + i % 26 for i in range(256))
FRAME_LIMIT = 16 * 1024
MESSAGE_LIMIT = 64 * 1024


def fragmented(opcode: int, data: bytes, size: int) -> bytes:
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return b"".join(
        encode_frame(opcode if i == 0 else OP_CONTINUATION, chunk, fin=i == len(chunks) - 1)
        for i, chunk in enumerate(chunks)
    )


def test_9_7_thousand_round_trips(ws):
    """Autobahn 9.7 / 9.8: one message at a time, each answered before the next."""
    for number in range(1000):
        opcode = OP_TEXT if number % 2 else OP_BINARY
        payload = b"message %04d" % number
        ws.send_frame(opcode, payload)
        assert ws.recv_message() == (opcode, payload)


def test_burst_below_channel_capacity_is_echoed_in_order(ws):
    """Pipelined messages queue on the websocket.receive channel (capacity 100 by
    default); a burst that fits arrives at the consumer, and back, in order."""
    messages = [b"burst %02d" % i for i in range(50)]
    ws.send_raw(b"".join(encode_frame(OP_TEXT, m) for m in messages))
    assert [ws.recv_message() for _ in messages] == [(OP_TEXT, m) for m in messages]


@pytest.fixture(scope="module")
def roomy_server():
    """An echo server whose channels hold 2,000 messages, for long pipelined bursts."""
    with live_server(ECHO_ROUTING, layer=InMemoryChannelLayer(capacity=2000)) as server:
        yield server


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_thousand_pipelined_messages_are_echoed_in_order(roomy_server, opcode):
    messages = [b"message %04d" % i for i in range(1000)]
    with RawWebSocket.connect(roomy_server.host, roomy_server.port, "/echo/") as ws:
        ws.send_raw(b"".join(encode_frame(opcode, m) for m in messages))
        received = [ws.recv_message(timeout=10) for _ in messages]
    assert received == [(opcode, m) for m in messages]


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["9.3-text", "9.4-binary"])
def test_9_3_9_4_one_megabyte_message_in_64k_fragments(ws, opcode):
    data = random.Random(9).randbytes(1_000_000).translate(LETTERS)
    ws.send_raw(fragmented(opcode, data, 64 * 1024))
    assert ws.recv_message(timeout=20) == (opcode, data)


#: WEBSOCKET_MAX_MESSAGE_SIZE and WEBSOCKET_MAX_FRAME_SIZE by default: 1 MiB.
DEFAULT_LIMIT = 1_048_576


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("fragment", [None, 256 * 1024], ids=["one-frame", "fragments"])
def test_9_x_message_at_the_default_size_limit_is_echoed(ws, opcode, fragment):
    """Only messages *larger* than the 1 MiB default close with 1009: one of exactly
    1,048,576 bytes reaches the consumer through the default channel layer and its
    echo comes back whole (issue 7.3)."""
    data = random.Random(7).randbytes(DEFAULT_LIMIT).translate(LETTERS)
    if fragment:
        ws.send_raw(fragmented(opcode, data, fragment))
    else:
        ws.send_frame(opcode, data)
    assert ws.recv_message(timeout=20) == (opcode, data)


@pytest.mark.parametrize("fragment", [None, 256 * 1024], ids=["one-frame", "fragments"])
def test_9_x_message_over_the_default_size_limit_fails_with_1009(ws, fragment):
    data = b"L" * (DEFAULT_LIMIT + 1)
    if fragment:
        ws.send_raw(fragmented(OP_TEXT, data, fragment))
    else:
        ws.send_frame(OP_TEXT, data)
    ws.fail_with(1009)


@pytest.fixture(scope="module")
def limited_server():
    with live_server(
        ECHO_ROUTING, WEBSOCKET_MAX_FRAME_SIZE=FRAME_LIMIT, WEBSOCKET_MAX_MESSAGE_SIZE=MESSAGE_LIMIT
    ) as server:
        yield server


@pytest.fixture
def limited_ws(limited_server):
    with RawWebSocket.connect(limited_server.host, limited_server.port, "/echo/") as conn:
        yield conn


def test_frame_at_the_frame_limit_is_accepted(limited_ws):
    limited_ws.send_binary(b"f" * FRAME_LIMIT)
    assert limited_ws.recv_binary() == b"f" * FRAME_LIMIT


def test_frame_over_the_frame_limit_fails_with_1009(limited_ws):
    limited_ws.send_binary(b"f" * (FRAME_LIMIT + 1))
    limited_ws.fail_with(1009)


def test_huge_declared_length_fails_with_1009_before_any_payload(limited_ws):
    """Only the header is sent: the server must refuse on the declared length alone
    instead of waiting to buffer 2**62 bytes."""
    limited_ws.send_raw(b"\x82\xff" + (2**62).to_bytes(8, "big") + b"mask")
    limited_ws.fail_with(1009)


def test_message_at_the_message_limit_is_accepted(limited_ws):
    data = bytes(range(256)) * (MESSAGE_LIMIT // 256)
    limited_ws.send_raw(fragmented(OP_BINARY, data, FRAME_LIMIT))
    assert limited_ws.recv_binary() == data


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_message_over_the_message_limit_fails_with_1009(limited_ws, opcode):
    limited_ws.send_raw(fragmented(opcode, b"m" * (MESSAGE_LIMIT + 1), FRAME_LIMIT))
    limited_ws.fail_with(1009)


def test_limits_apply_per_message_not_per_connection(limited_ws):
    for _ in range(3):
        limited_ws.send_raw(fragmented(OP_BINARY, b"r" * MESSAGE_LIMIT, FRAME_LIMIT))
        assert limited_ws.recv_binary() == b"r" * MESSAGE_LIMIT
