"""Autobahn 5.x: fragmentation (RFC 6455 5.4).

A message may be split into a first frame and any number of continuation frames, some
empty; control frames may be interleaved and are handled at once; control frames are never
fragmented; a continuation with no message in progress, or a new data frame inside one, is
a protocol error (1002).
"""

from __future__ import annotations

import pytest

from .rawclient import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    encode_frame,
)

pytestmark = pytest.mark.timeout(20)


def fragments(opcode: int, parts: list[bytes]) -> bytes:
    """The frames of one message split into ``parts``."""
    frames = []
    for index, part in enumerate(parts):
        frames.append(
            encode_frame(
                opcode if index == 0 else OP_CONTINUATION, part, fin=index == len(parts) - 1
            )
        )
    return b"".join(frames)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_5_3_message_in_two_fragments_is_reassembled(ws, opcode):
    ws.send_raw(fragments(opcode, [b"fragment1", b"fragment2"]))
    assert ws.recv_message() == (opcode, b"fragment1fragment2")


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_5_4_fragments_sent_in_separate_writes_are_reassembled(ws, opcode):
    ws.send_frame(opcode, b"slow-", fin=False)
    ws.send_frame(OP_CONTINUATION, b"ly", fin=False)
    ws.send_frame(OP_CONTINUATION, b"!", fin=True)
    assert ws.recv_message() == (opcode, b"slow-ly!")


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_5_x_many_fragments_are_reassembled(ws, opcode):
    parts = [b"%04d," % i for i in range(500)]
    ws.send_raw(fragments(opcode, parts))
    assert ws.recv_message(timeout=10) == (opcode, b"".join(parts))


@pytest.mark.parametrize(
    "parts",
    [[b"", b""], [b"", b"middle", b""], [b"", b"", b"", b"end"], [b"start", b"", b""]],
    ids=["all-empty", "empty-ends", "empty-start", "empty-tail"],
)
def test_6_1_empty_fragments_are_allowed(ws, parts):
    ws.send_raw(fragments(OP_TEXT, parts))
    assert ws.recv_message() == (OP_TEXT, b"".join(parts))


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_5_6_ping_between_fragments_is_answered_first(ws, opcode):
    """The pong comes before the message: the server cannot have the message until the
    last fragment arrives, and that is sent only after the pong was received."""
    ws.send_frame(opcode, b"frag1-", fin=False)
    ws.send_frame(OP_PING, b"interleaved")
    pong = ws.recv_frame()
    assert (pong.opcode, pong.payload) == (OP_PONG, b"interleaved")
    ws.send_frame(OP_CONTINUATION, b"frag2", fin=True)
    assert ws.recv_message() == (opcode, b"frag1-frag2")


def test_5_19_5_20_pings_and_pongs_interleaved_in_five_fragments(ws):
    ws.send_raw(
        encode_frame(OP_TEXT, "f1", fin=False)
        + encode_frame(OP_CONTINUATION, "f2", fin=False)
        + encode_frame(OP_PING, b"ping-1")
        + encode_frame(OP_CONTINUATION, "f3", fin=False)
        + encode_frame(OP_PONG, b"unsolicited")
        + encode_frame(OP_CONTINUATION, "f4", fin=False)
        + encode_frame(OP_PING, b"ping-2")
        + encode_frame(OP_CONTINUATION, "f5", fin=True)
    )
    frames = [ws.recv_frame() for _ in range(3)]
    assert [(f.opcode, f.payload) for f in frames] == [
        (OP_PONG, b"ping-1"),
        (OP_PONG, b"ping-2"),
        (OP_TEXT, b"f1f2f3f4f5"),
    ]


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG], ids=["5.1-ping", "5.2-pong"])
def test_5_1_5_2_fragmented_control_frame_fails_with_1002(ws, opcode):
    ws.send_raw(
        encode_frame(opcode, b"frag1", fin=False)
        + encode_frame(OP_CONTINUATION, b"frag2", fin=True)
    )
    ws.fail_with(1002)


@pytest.mark.parametrize("fin", [True, False], ids=["5.9-fin", "5.10-nofin"])
def test_5_9_5_10_continuation_without_a_message_fails_with_1002(ws, fin):
    ws.send_frame(OP_CONTINUATION, b"orphan", fin=fin)
    ws.fail_with(1002)


def test_5_15_continuation_after_a_finished_message_fails_with_1002(ws):
    ws.send_raw(fragments(OP_TEXT, [b"frag1", b"frag2"]))
    assert ws.recv_text() == "frag1frag2"
    ws.send_frame(OP_CONTINUATION, b"frag3", fin=False)
    ws.fail_with(1002)


def test_5_15_same_write_the_message_is_echoed_before_the_failure(ws):
    """Autobahn 5.15, strict: the finished message is answered before the stray
    continuation fails the connection."""
    ws.send_raw(
        fragments(OP_TEXT, [b"frag1", b"frag2"])
        + encode_frame(OP_CONTINUATION, b"frag3", fin=False)
        + encode_frame(OP_CONTINUATION, b"frag4", fin=True)
    )
    assert ws.recv_text() == "frag1frag2"
    ws.fail_with(1002)


def test_stray_continuation_after_an_unfragmented_message_in_the_same_write(ws):
    ws.send_raw(encode_frame(OP_TEXT, "whole") + encode_frame(OP_CONTINUATION, b"stray"))
    assert ws.recv_text() == "whole"
    ws.fail_with(1002)


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY])
def test_5_18_new_data_frame_inside_a_fragmented_message_fails_with_1002(ws, second):
    ws.send_raw(
        encode_frame(OP_TEXT, b"frag1", fin=False) + encode_frame(second, b"frag2", fin=True)
    )
    ws.fail_with(1002)


def test_5_x_message_after_a_reassembled_one_is_separate(ws):
    ws.send_raw(fragments(OP_BINARY, [b"a", b"b"]) + encode_frame(OP_TEXT, "c"))
    assert ws.recv_message() == (OP_BINARY, b"ab")
    assert ws.recv_message() == (OP_TEXT, b"c")
