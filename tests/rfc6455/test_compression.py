"""Autobahn 12.x / 13.x: permessage-deflate (RFC 7692).

The server negotiates permessage-deflate (WEBSOCKET_COMPRESSION, on by default) with the
client's parameters honoured: compressed messages of many sizes are echoed compressed
(12.x), under each combination of context takeover and window bits (13.x), the client
checking each agreed parameter on the server's output (deflate.py). Decompressed size is
bounded by the message limit: a decompression bomb fails with 1009 while memory stays
flat. With compression off an offer is declined and a compressed frame fails with 1002.
"""

from __future__ import annotations

import random
import tracemalloc
import zlib

import pytest

from tests.livesrv import live_server

from .consumers import ECHO_ROUTING
from .deflate import RSV1, Agreed, DeflateClient, response_params
from .rawclient import OP_BINARY, OP_CONTINUATION, OP_PING, OP_TEXT, RawWebSocket

pytestmark = pytest.mark.timeout(30)

LIMIT = 1_048_576  # WEBSOCKET_MAX_MESSAGE_SIZE's default


def connect(server, offer: str | None, **options) -> RawWebSocket:
    headers = [("Sec-WebSocket-Extensions", offer)] if offer else []
    return RawWebSocket.connect(
        server.host, server.port, "/echo/", extra_headers=headers, **options
    )


def deflating(server, offer: str, window_bits: int | None = None) -> DeflateClient:
    ws = connect(server, offer)
    agreed = response_params(ws)
    assert agreed is not None, f"{offer!r} was declined"
    return DeflateClient(ws, agreed, window_bits)


def text(size: int, seed: int = 0) -> bytes:
    """Compressible text of ``size`` bytes (words drawn from a small vocabulary)."""
    words = "alpha beta gamma delta channel group socket message reply консумер ☃".split()
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words).encode() + b" "
    return bytes(out[:size]).decode("utf-8", "ignore").encode()


def far_repeat(distance: int, seed: int = 1) -> bytes:
    """A random block of 300 bytes, ``distance`` random bytes, the block again: the repeat
    can be referenced only by a window larger than ``distance`` + 300."""
    rng = random.Random(seed)
    block = rng.randbytes(300)
    return block + rng.randbytes(distance) + block


# -- negotiation --------------------------------------------------------------------------


NEGOTIATION = [
    ("permessage-deflate", Agreed(server_max_window_bits=12)),
    (
        "permessage-deflate; client_max_window_bits",
        Agreed(server_max_window_bits=12, client_max_window_bits=12),
    ),
    (
        "permessage-deflate; client_max_window_bits=10",
        Agreed(server_max_window_bits=12, client_max_window_bits=10),
    ),
    (
        "permessage-deflate; client_max_window_bits=15",
        Agreed(server_max_window_bits=12, client_max_window_bits=12),
    ),
    ("permessage-deflate; server_max_window_bits=9", Agreed(server_max_window_bits=9)),
    ("permessage-deflate; server_max_window_bits=15", Agreed(server_max_window_bits=12)),
    (
        "permessage-deflate; server_no_context_takeover",
        Agreed(server_no_context_takeover=True, server_max_window_bits=12),
    ),
    (
        "permessage-deflate; client_no_context_takeover",
        Agreed(client_no_context_takeover=True, server_max_window_bits=12),
    ),
    (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=9",
        Agreed(True, True, 10, 9),
    ),
    # zlib cannot compress with an 8-bit window: that offer is declined, the next taken.
    (
        "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits",
        Agreed(server_max_window_bits=12, client_max_window_bits=12),
    ),
    ("permessage-deflate; server_max_window_bits=8", None),
    ("permessage-deflate; unknown_parameter", None),
    ("permessage-deflate; server_max_window_bits=16", None),
    ("x-webkit-deflate-frame", None),
]


@pytest.mark.parametrize("offer, agreed", NEGOTIATION, ids=[o for o, _ in NEGOTIATION])
def test_negotiation_honours_the_client_parameters(echo_server, offer, agreed):
    with connect(echo_server, offer) as ws:
        assert response_params(ws) == agreed
        if agreed is None:  # declined: the connection works uncompressed
            ws.send_text("plain " * 50)
            frame = ws.recv_frame()
            assert (frame.opcode, frame.rsv, frame.payload) == (OP_TEXT, 0, b"plain " * 50)


# -- 12.x: compressed echo at many sizes ----------------------------------------------------

SIZES = [0, 1, 16, 64, 125, 126, 256, 1024, 4096, 16384, 65535, 65536, 131072, 262144]


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_compressed_messages_of_every_size_are_echoed_compressed(echo_server, opcode):
    client = deflating(echo_server, "permessage-deflate; client_max_window_bits")
    with client.ws:
        for index, size in enumerate(SIZES):
            payload = text(size, seed=index)
            for _ in range(3):  # the same again: context taken over on both sides
                client.send(opcode, payload)
                assert client.recv()[:2] == (opcode, payload)


def test_a_fragmented_compressed_message_is_echoed(echo_server):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws:
        payload = text(50_000)
        client.send(OP_TEXT, payload, fragments=7)
        assert client.recv()[:2] == (OP_TEXT, payload)


def test_pings_between_compressed_fragments_are_answered(echo_server):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws as ws:
        data = client.compress(text(5000))
        ws.send_frame(OP_TEXT, data[:100], fin=False, rsv=RSV1)
        ws.send_frame(OP_PING, b"between")
        pong = ws.recv_frame()
        assert pong.payload == b"between" and pong.rsv == 0
        ws.send_frame(OP_CONTINUATION, data[100:])
        assert client.recv()[1] == text(5000)


def test_an_uncompressed_message_is_still_accepted(echo_server):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws as ws:
        ws.send_text("not compressed")
        assert client.recv()[:2] == (OP_TEXT, b"not compressed")


# -- 13.x: context takeover and window bits ---------------------------------------------------


def test_context_takeover_on_both_sides(echo_server):
    client = deflating(echo_server, "permessage-deflate; client_max_window_bits")
    payload = text(3000)
    with client.ws:
        sent = [client.send(OP_TEXT, payload) for _ in range(3)]
        received = [client.recv() for _ in range(3)]
    assert all(message[1] == payload for message in received)
    # The repeats refer back to the first message: the server kept both contexts.
    assert sent[1] < sent[0] / 10 and sent[2] < sent[0] / 10
    assert received[1][2] < received[0][2] / 10 and received[2][2] < received[0][2] / 10


def test_server_no_context_takeover_is_honoured(echo_server):
    client = deflating(echo_server, "permessage-deflate; server_no_context_takeover")
    payload = text(3000)
    with client.ws:
        for _ in range(3):
            client.send(OP_TEXT, payload)
        # Each reply decodes with a fresh decompressor (deflate.py) and none is smaller.
        sizes = {client.recv()[2] for _ in range(3)}
    assert len(sizes) == 1


def test_client_no_context_takeover_is_honoured(echo_server):
    client = deflating(echo_server, "permessage-deflate; client_no_context_takeover")
    payload = text(3000)
    with client.ws:
        for _ in range(3):  # each compressed on its own: the server decodes each afresh
            client.send(OP_TEXT, payload)
            assert client.recv()[1] == payload


@pytest.mark.parametrize("bits", [9, 10, 11, 12])
def test_server_max_window_bits_is_honoured(echo_server, bits):
    client = deflating(echo_server, f"permessage-deflate; server_max_window_bits={bits}")
    assert client.agreed.server_max_window_bits == bits
    with client.ws:
        for distance in (1 << bits) - 400, (1 << bits) + 100, 20_000:
            payload = far_repeat(distance)
            client.send(OP_BINARY, payload)
            # Decoded with a window of ``bits``: a reference further back would fail.
            assert client.recv()[1] == payload


@pytest.mark.parametrize("bits", [9, 12])
def test_client_window_bits_the_server_chose_are_enough(echo_server, bits):
    client = deflating(echo_server, f"permessage-deflate; client_max_window_bits={bits}")
    with client.ws:
        payload = far_repeat((1 << bits) - 400)
        client.send(OP_BINARY, payload)
        assert client.recv()[1] == payload


def test_a_client_that_sets_no_window_limit_may_use_15_bits(echo_server):
    client = deflating(echo_server, "permessage-deflate")
    assert client.agreed.client_max_window_bits == 15
    with client.ws:
        payload = far_repeat(20_000)
        assert client.send(OP_BINARY, payload) < 20_500  # the repeat was referenced
        assert client.recv()[1] == payload


# -- failures ------------------------------------------------------------------------------


def test_rsv1_on_a_continuation_frame_fails_with_1002(echo_server):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws as ws:
        data = client.compress(text(1000))
        ws.send_frame(OP_TEXT, data[:10], fin=False, rsv=RSV1)
        ws.send_frame(OP_CONTINUATION, data[10:], rsv=RSV1)
        ws.fail_with(1002)


@pytest.mark.parametrize("opcode", [OP_PING, 0x8], ids=["ping", "close"])
def test_rsv1_on_a_control_frame_fails_with_1002(echo_server, opcode):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws as ws:
        ws.send_frame(opcode, b"\x03\xe8" if opcode == 0x8 else b"", rsv=RSV1)
        ws.fail_with(1002)


@pytest.mark.parametrize("rsv", [2, 1, 6], ids=["rsv2", "rsv3", "rsv1+rsv2"])
def test_other_reserved_bits_still_fail_with_1002(echo_server, rsv):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws as ws:
        ws.send_frame(OP_TEXT, client.compress(b"hello"), rsv=rsv)
        ws.fail_with(1002)


def test_data_that_does_not_inflate_fails_with_1002(echo_server):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws as ws:
        ws.send_frame(OP_BINARY, b"\xff\xff\xff\xff not deflate", rsv=RSV1)
        ws.fail_with(1002)


def test_compressed_text_that_is_not_utf8_fails_with_1007(echo_server):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws as ws:
        client.send(OP_TEXT, b"caf\xc3")
        ws.fail_with(1007)


# -- the message limit applies to the decompressed size ----------------------------------------


def test_a_message_that_inflates_to_the_limit_is_echoed(echo_server):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws:
        payload = text(LIMIT)
        assert client.send(OP_BINARY, payload) < LIMIT / 4
        assert client.recv(timeout=20)[1] == payload


@pytest.mark.parametrize("fragments", [1, 16])
def test_one_byte_over_the_limit_after_inflating_fails_with_1009(echo_server, fragments):
    client = deflating(echo_server, "permessage-deflate")
    with client.ws as ws:
        client.send(OP_BINARY, text(LIMIT + 1), fragments=fragments)
        ws.fail_with(1009, timeout=10)


@pytest.mark.parametrize("mib, fragments", [(32, 1), (256, 1), (256, 64)])
def test_a_decompression_bomb_fails_with_1009_and_memory_stays_flat(echo_server, mib, fragments):
    """256 MiB of zeros deflate to about 250 KB (32 MiB to one frame of about 32 KB, which
    the engine's shortcut inflates); the server inflates no more than the 1 MiB limit
    before failing."""
    client = deflating(echo_server, "permessage-deflate")
    compressor = zlib.compressobj(wbits=-15)
    bomb = compressor.compress(bytes(mib << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]
    with client.ws as ws:
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            step = -(-len(bomb) // fragments)
            for index in range(0, len(bomb), step):
                ws.send_frame(
                    OP_BINARY if index == 0 else OP_CONTINUATION,
                    bomb[index : index + step],
                    fin=index + step >= len(bomb),
                    rsv=RSV1 if index == 0 else 0,
                )
            ws.fail_with(1009, timeout=10)
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
    # The bomb itself (our copy, masked copies) plus at most the limit, not 256 MiB.
    assert peak < 4 * len(bomb) + 4 * LIMIT, f"peak {peak} bytes"


# -- compression off -------------------------------------------------------------------------

OFFERS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    "x-webkit-deflate-frame",
]


@pytest.fixture(scope="module")
def plain_server():
    with live_server(ECHO_ROUTING, WEBSOCKET_COMPRESSION=False) as server:
        yield server


@pytest.fixture(params=OFFERS)
def declined(request, plain_server):
    with connect(plain_server, request.param) as ws:
        yield ws


def test_with_compression_off_an_offer_is_declined(declined):
    assert declined.response.header("Sec-WebSocket-Extensions") is None
    declined.send_text("plain " * 50)
    frame = declined.recv_frame()
    assert (frame.opcode, frame.rsv, frame.payload) == (OP_TEXT, 0, b"plain " * 50)


def test_with_compression_off_a_compressed_frame_fails_with_1002(declined):
    declined.send_frame(OP_TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=RSV1)
    declined.fail_with(1002)
