"""Autobahn 1.x (framing), 3.x (reserved bits) and 4.x (reserved opcodes).

RFC 6455 5.2: payload lengths use a 7-bit, 16-bit (126) or 64-bit (127) form; client frames
must be masked (5.1, 5.3) and server frames must not be; RSV1-3 must be 0 unless an
extension says otherwise; opcodes 3-7 and 11-15 are reserved. An endpoint that receives
any of these violations fails the connection with 1002 (7.4.1).
"""

from __future__ import annotations

import random

import pytest

from .consumers import BLAST_MESSAGES, BLAST_SENDERS, BLAST_SIZE
from .rawclient import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, RawWebSocket, encode_frame

pytestmark = pytest.mark.timeout(20)

LENGTHS = [0, 1, 125, 126, 127, 128, 65535, 65536, 1_000_000]


def payload_of(length: int, seed: int = 0) -> bytes:
    return random.Random(seed + length).randbytes(length)


# -- 1.1 / 1.2: text and binary messages of every length form ---------------------------


@pytest.mark.parametrize("length", LENGTHS)
def test_1_1_text_message_of_length_is_echoed(ws, length):
    text = ("héllo wörld ✓ " * (length // 10 + 1)).encode("utf-8")[:length]
    text = text.decode("utf-8", "ignore")
    ws.send_text(text)
    assert ws.recv_text(timeout=10) == text


@pytest.mark.parametrize("length", LENGTHS)
def test_1_2_binary_message_of_length_is_echoed(ws, length):
    data = payload_of(length)
    ws.send_binary(data)
    assert ws.recv_binary(timeout=10) == data


@pytest.mark.parametrize("length_form", [126, 127])
def test_1_x_non_minimal_length_encoding_is_accepted(ws, length_form):
    """RFC 6455 5.2 asks senders for the minimal length form; a receiver still decodes a
    longer one (websockets and browsers do), so the message arrives intact."""
    ws.send_frame(OP_BINARY, b"short", length_form=length_form)
    assert ws.recv_binary() == b"short"


def test_1_x_frame_written_one_byte_at_a_time_is_reassembled(ws):
    """Autobahn 1.1.8 / 2.6 style chopping: TCP may deliver a frame in any pieces."""
    for byte in encode_frame(OP_TEXT, "chopped into single octets"):
        ws.send_raw(bytes([byte]))
    assert ws.recv_text() == "chopped into single octets"


def test_1_x_several_frames_in_one_write_are_all_handled(ws):
    ws.send_raw(b"".join(encode_frame(OP_TEXT, f"m{i}") for i in range(20)))
    assert [ws.recv_text() for _ in range(20)] == [f"m{i}" for i in range(20)]


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (3, b"\x82\x03"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_1_x_server_frames_are_unmasked_with_minimal_length(ws, length, header):
    """RFC 6455 5.1: a server must not mask; 5.2: the minimal length form is used."""
    ws.send_binary(b"x" * length)
    frame = ws.recv_frame()
    assert frame.header == header
    assert frame.fin and not frame.masked and len(frame.payload) == length


def test_replies_racing_from_many_greenlets_never_interleave(echo_server):
    """RFC 6455 5.4: frames of different messages must not be interleaved. Eight
    greenlets send 100 KB replies at once to a client with a 4 KB receive buffer, so the
    socket fills and the server's writer queues; every frame must arrive whole, each
    sender's messages in the order it sent them."""
    with RawWebSocket.connect(
        echo_server.host, echo_server.port, "/blast/", receive_buffer=4096
    ) as ws:
        ws.send_text("go")
        seen: dict[int, list[int]] = {n: [] for n in range(BLAST_SENDERS)}
        for _ in range(BLAST_SENDERS * BLAST_MESSAGES):
            frame = ws.recv_frame(timeout=10)
            assert frame.opcode == OP_BINARY and frame.fin and len(frame.payload) == BLAST_SIZE
            sender, index = frame.payload[:2]
            assert frame.payload == bytes([sender, index]) * (BLAST_SIZE // 2)
            seen[sender].append(index)
        assert seen == {n: list(range(BLAST_MESSAGES)) for n in range(BLAST_SENDERS)}


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_PING, OP_CLOSE])
def test_1_x_unmasked_client_frame_fails_with_1002(ws, opcode):
    """RFC 6455 5.1: the server must close on an unmasked client frame."""
    payload = b"\x03\xe8" if opcode == OP_CLOSE else b"unmasked"
    ws.send_frame(opcode, payload, mask=False)
    ws.fail_with(1002)


def test_1_x_zero_mask_key_is_still_masked(ws):
    """An all-zero masking key is legal: the mask bit is what counts."""
    ws.send_frame(OP_TEXT, "zero key", mask_key=b"\0\0\0\0")
    assert ws.recv_text() == "zero key"


# -- 3.x: reserved bits ------------------------------------------------------------


@pytest.mark.parametrize("rsv", range(1, 8))
def test_3_x_reserved_bits_on_text_fail_with_1002(ws, rsv):
    ws.send_frame(OP_TEXT, "Hello, world!", rsv=rsv)
    ws.fail_with(1002)


def test_3_2_reserved_bits_after_a_valid_message(ws):
    """Autobahn 3.2 / 3.4: the valid message before the bad frame is echoed."""
    ws.send_text("valid")
    assert ws.recv_text() == "valid"
    ws.send_frame(OP_TEXT, "bad", rsv=2)
    ws.fail_with(1002)


def test_3_3_reserved_bits_in_the_same_write_as_a_valid_message(ws):
    """Autobahn 3.3, strict: the valid message before the bad frame is answered (its
    consumer gets it and its echo leaves before the close), then the connection fails;
    the ping after the bad frame is never answered."""
    ws.send_raw(
        encode_frame(OP_TEXT, "valid")
        + encode_frame(OP_TEXT, "bad", rsv=3)
        + encode_frame(OP_PING, b"after")
    )
    assert ws.recv_text() == "valid"
    ws.fail_with(1002)


@pytest.mark.parametrize(
    ("opcode", "rsv"),
    [(OP_BINARY, 5), (OP_PING, 6), (OP_CLOSE, 7)],
    ids=["3.5-binary", "3.6-ping", "3.7-close"],
)
def test_3_5_to_3_7_reserved_bits_on_other_frames_fail_with_1002(ws, opcode, rsv):
    payload = b"\x03\xe8" if opcode == OP_CLOSE else b"\x00\xff\xfe"
    ws.send_frame(opcode, payload, rsv=rsv)
    ws.fail_with(1002)


# -- 4.x: reserved opcodes ---------------------------------------------------------


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
@pytest.mark.parametrize("payload", [b"", b"reserved payload"], ids=["empty", "payload"])
def test_4_x_reserved_opcode_fails_with_1002(ws, opcode, payload):
    ws.send_frame(opcode, payload)
    ws.fail_with(1002)


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [(5, b""), (6, b"reserved payload"), (13, b""), (14, b"reserved payload")],
    ids=["4.1.3", "4.1.4", "4.2.3", "4.2.4"],
)
def test_4_x_reserved_opcode_after_valid_message_and_before_ping(ws, opcode, payload):
    """Autobahn 4.1.3-4.1.4 / 4.2.3-4.2.4, strict: valid text, a reserved opcode, then a
    ping, in one write. The text is echoed, then the connection fails at the reserved
    opcode; the ping after it is never answered."""
    ws.send_raw(
        encode_frame(OP_TEXT, "before")
        + encode_frame(opcode, payload)
        + encode_frame(OP_PING, b"after")
    )
    assert ws.recv_text() == "before"
    ws.fail_with(1002)


@pytest.mark.parametrize("opcode", [4, 12])
def test_4_1_4_reserved_opcode_after_an_echoed_message(ws, opcode):
    ws.send_text("before")
    assert ws.recv_text() == "before"
    ws.send_frame(opcode, b"reserved")
    ws.fail_with(1002)
