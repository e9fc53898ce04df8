"""permessage-deflate in the frame engine (frames.py): its shortcut for whole compressed
frames yields exactly what websockets' own extension yields, whatever the split of the
byte stream; its zlib objects are made only when needed; and a real client library
(websockets' own client) talks compressed to the real server.

The RFC 7692 conformance cases (negotiation, window bits, context takeover, limits and
decompression bombs over real sockets) are in tests/rfc6455/test_compression.py.
"""

from __future__ import annotations

import random
import tracemalloc
import zlib

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.sync.client import connect

from geventchannels.routing import route
from geventchannels.server.frames import DEFLATE, FrameEngine, LazyDeflate, check_handshake
from tests.livesrv import live_server
from tests.test_server_websocket import _check_same_as_reference, _client_frame

pytestmark = pytest.mark.timeout(60)

#: (client no context takeover, server no context takeover, client window, server window).
PARAMETERS = [(False, False, 15, 12), (True, True, 9, 9), (False, True, 12, 15)]


def _extensions(client_nct: bool, server_nct: bool, client_bits: int, server_bits: int):
    """Ours and websockets' own, negotiated alike (remote = the client)."""
    settings = {"memLevel": 5}
    ours = LazyDeflate(client_nct, server_nct, client_bits, server_bits, dict(settings))
    theirs = PerMessageDeflate(client_nct, server_nct, client_bits, server_bits, dict(settings))
    return ours, theirs


def _compressed(compressor_box: list, bits: int, fresh: bool, payload: bytes) -> bytes:
    if fresh or not compressor_box:
        compressor_box[:] = [zlib.compressobj(wbits=-bits)]
    data = compressor_box[0].compress(payload) + compressor_box[0].flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


@pytest.mark.parametrize("seed", range(40))
def test_compressed_streams_yield_what_websockets_yields(seed):
    """Whole and fragmented, compressed and plain messages, pings, and sometimes a
    violation at the end, split anywhere: the same messages and the same answers."""
    rng = random.Random(seed)
    client_nct, server_nct, client_bits, server_bits = rng.choice(PARAMETERS)
    box: list = []
    stream = b""
    for _ in range(rng.randint(1, 30)):
        kind = rng.random()
        size = rng.choice([0, 1, 5, 125, 126, 1000, 5000, 70000])
        text = "".join(rng.choice("aé😀ß ") for _ in range(size // 2)).encode()
        payload = rng.choice([text, bytes(size), rng.randbytes(size)])
        opcode = 1 if payload is text else 2
        if kind < 0.45:
            data = _compressed(box, client_bits, client_nct, payload)
            stream += _client_frame(opcode, data, rng=rng, rsv=4)
        elif kind < 0.6:
            data = _compressed(box, client_bits, client_nct, payload)
            cut = rng.randrange(len(data) + 1)
            stream += _client_frame(opcode, data[:cut], fin=False, rng=rng, rsv=4)
            stream += _client_frame(9, b"between", rng=rng)
            stream += _client_frame(0, data[cut:], rng=rng)
        elif kind < 0.75:
            stream += _client_frame(opcode, payload, rng=rng)  # not compressed
        elif kind < 0.85:
            stream += _client_frame(9, payload[:100], rng=rng)
        elif kind < 0.9:
            stream += _client_frame(opcode, b"\xff\xfe not deflate", rng=rng, rsv=4)
            break
        elif kind < 0.95:
            data = _compressed(box, client_bits, client_nct, payload)
            stream += _client_frame(opcode, data[:3], fin=False, rng=rng, rsv=4)
            stream += _client_frame(0, data[3:], rng=rng, rsv=4)  # RSV1 on a continuation
            break
        else:
            stream += _client_frame(
                2, _compressed(box, client_bits, client_nct, bytes(3 << 20)), rng=rng, rsv=4
            )
            break  # inflates past every limit below
    limits = rng.choice([(None, 1 << 21), (2000, 1000), (1 << 20, 1 << 20)])
    ours_ext, theirs_ext = _extensions(client_nct, server_nct, client_bits, server_bits)
    ours = FrameEngine(*limits, ours_ext)
    reference = ServerProtocol(state=OPEN, max_size=limits)
    reference.extensions = [theirs_ext]
    _check_same_as_reference(ours, reference, stream, rng)


@pytest.mark.parametrize("parameters", PARAMETERS)
def test_compressed_replies_are_the_bytes_websockets_sends(parameters):
    ours_ext, theirs_ext = _extensions(*parameters)
    ours = FrameEngine(None, None, ours_ext)
    reference = ServerProtocol(state=OPEN)
    reference.extensions = [theirs_ext]
    rng = random.Random(1)
    for size in [0, 1, 100, 125, 126, 2047, 2048, 5000, 65535, 65536, 200000]:
        text = ("reply %d " % size * size)[:size]
        ours.send_text(text.encode())
        reference.send_text(text.encode())
        data = rng.randbytes(size // 3) + bytes(size - size // 3)
        ours.send_binary(data)
        reference.send_binary(data)
        assert ours.take_output() == (b"".join(reference.data_to_send()), False)


def test_idle_connections_hold_no_zlib_memory():
    """websockets makes both zlib objects (about 38 KiB for the compressor alone) at the
    handshake; ours wait for the first message in each direction."""
    offer = [("Host", "a"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
    offer += [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    offer += [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        engines = []
        for _ in range(200):
            response, deflate = check_handshake("GET", "/", "HTTP/1.1", offer, True)
            assert response.status_code == 101 and isinstance(deflate, LazyDeflate)
            engines.append(FrameEngine(1 << 20, 1 << 20, deflate))
        per_connection = (tracemalloc.get_traced_memory()[0] - before) / len(engines)
    finally:
        tracemalloc.stop()
    assert per_connection < 4096, per_connection
    deflate = engines[0].deflate
    assert "encoder" not in vars(deflate) and "decoder" not in vars(deflate)
    engines[0].send_text(b"hello " * 10)
    assert "encoder" in vars(deflate) and "decoder" not in vars(deflate)


def test_no_context_takeover_frees_the_compressor_after_each_message():
    """The websockets behaviour LazyDeflate relies on: with no context takeover the zlib
    object is deleted after each message (and made again, lazily, for the next)."""
    ours, _ = _extensions(True, True, 12, 12)
    engine = FrameEngine(None, None, ours)
    for _ in range(3):
        engine.send_text(b"x" * 100)
        assert "encoder" not in vars(ours)
    data = zlib.compressobj(wbits=-12)
    message = data.compress(b"y" * 100) + data.flush(zlib.Z_SYNC_FLUSH)
    assert engine.receive(_client_frame(1, message[:-4], rsv=4)) == ["y" * 100]
    assert "decoder" not in vars(ours)


def test_the_offer_is_websockets_default_server_configuration():
    assert (DEFLATE.server_max_window_bits, DEFLATE.client_max_window_bits) == (12, 12)
    assert DEFLATE.compress_settings == {"memLevel": 5}


# -- against the real server, with websockets' own client ----------------------------------------


def echo(message) -> None:
    text = message.get("text")
    message.reply_channel.send({"text": text} if text is not None else {"bytes": message["bytes"]})


@pytest.mark.parametrize("compression", ["deflate", None])
def test_websockets_client_echoes_with_and_without_compression(compression):
    with live_server([route("websocket.receive", echo)]) as server:
        with connect(server.ws_url + "/", compression=compression, open_timeout=5) as ws:
            negotiated = [type(e).__name__ for e in ws.protocol.extensions]
            assert negotiated == (["PerMessageDeflate"] if compression else [])
            for size in [0, 10, 1000, 70000, 1 << 20]:
                text = ("échos %d " % size * size)[: size // 2]  # up to 1 MiB of UTF-8
                ws.send(text)
                assert ws.recv(timeout=10) == text
                ws.send(text.encode())
                assert ws.recv(timeout=10) == text.encode()
