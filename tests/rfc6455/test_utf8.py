"""Autobahn 6.x: UTF-8 handling (RFC 6455 5.6, 8.1).

Text messages must be valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
above U+10FFFF); on invalid data the endpoint fails the connection with 1007. Validity is
a property of the whole message, so a code point may straddle fragment boundaries. The
cases follow Markus Kuhn's UTF-8 decoder stress test, which Autobahn uses too.
"""

from __future__ import annotations

import pytest

from .rawclient import OP_CONTINUATION, OP_PING, OP_TEXT, encode_frame

pytestmark = pytest.mark.timeout(20)

VALID = {
    "6.2-mixed": "Hello-µ@ßöäüàá-UTF-8!!".encode(),
    "6.5-kosme": "κόσμε".encode(),
    "6.7-first-1-byte": b"\x00",
    "6.7-first-2-byte": b"\xc2\x80",
    "6.7-first-3-byte": b"\xe0\xa0\x80",
    "6.7-first-4-byte": b"\xf0\x90\x80\x80",
    "6.9-last-1-byte": b"\x7f",
    "6.9-last-2-byte": b"\xdf\xbf",
    "6.9-last-3-byte": b"\xef\xbf\xbf",
    "6.9-last-4-byte": b"\xf4\x8f\xbf\xbf",
    "6.11-before-surrogates": b"\xed\x9f\xbf",
    "6.11-after-surrogates": b"\xee\x80\x80",
    "6.11-replacement-char": b"\xef\xbf\xbd",
    "6.22-noncharacter-fffe": b"\xef\xbf\xbe",
    "6.22-noncharacter-1fffe": b"\xf0\x9f\xbf\xbe",
    "6.23-noncharacter-fdd0": b"\xef\xb7\x90",
    "emoji": "grinning 😀 and 𝄞 clef".encode(),
}

INVALID = {
    "6.3-kosme-with-surrogate": "κόσμε".encode() + b"\xed\xa0\x80" + b"edited",
    "6.8-above-10ffff": b"\xf4\x90\x80\x80",
    "6.8-4-byte-max": b"\xf7\xbf\xbf\xbf",
    "6.8-5-byte": b"\xf8\x88\x80\x80\x80",
    "6.8-6-byte": b"\xfc\x84\x80\x80\x80\x80",
    "6.12-lone-continuation": b"\x80",
    "6.12-continuations": b"\x80\xbf\x80",
    "6.13-lonely-2-byte-start": b"\xc2 ",
    "6.13-lonely-3-byte-start": b"\xe0 ",
    "6.13-lonely-4-byte-start": b"\xf0 ",
    "6.14-missing-last-of-2": b"\xc2",
    "6.14-missing-last-of-3": b"\xe0\xa0",
    "6.14-missing-last-of-4": b"\xf0\x90\x80",
    "6.15-concatenated-incomplete": b"\xc2\xe0\xa0\xf0\x90\x80",
    "6.16-impossible-fe": b"\xfe",
    "6.16-impossible-ff": b"\xff",
    "6.16-impossible-fefeffff": b"\xfe\xfe\xff\xff",
    "6.17-overlong-slash-2": b"\xc0\xaf",
    "6.17-overlong-slash-3": b"\xe0\x80\xaf",
    "6.17-overlong-slash-4": b"\xf0\x80\x80\xaf",
    "6.18-max-overlong-2": b"\xc1\xbf",
    "6.18-max-overlong-3": b"\xe0\x9f\xbf",
    "6.18-max-overlong-4": b"\xf0\x8f\xbf\xbf",
    "6.19-overlong-nul": b"\xc0\x80",
    "6.20-surrogate-d800": b"\xed\xa0\x80",
    "6.20-surrogate-db7f": b"\xed\xad\xbf",
    "6.20-surrogate-dc00": b"\xed\xb0\x80",
    "6.20-surrogate-dfff": b"\xed\xbf\xbf",
    "6.21-surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "after-valid-prefix": b"valid prefix then \xff",
}


def octet_fragments(data: bytes) -> bytes:
    """One text message sent as one fragment per octet (Autobahn 6.2.4 / 6.6.x)."""
    frames = []
    for index in range(len(data)):
        frames.append(
            encode_frame(
                OP_TEXT if index == 0 else OP_CONTINUATION,
                data[index : index + 1],
                fin=index == len(data) - 1,
            )
        )
    return b"".join(frames)


@pytest.mark.parametrize("data", VALID.values(), ids=VALID.keys())
def test_valid_utf8_text_is_echoed(ws, data):
    ws.send_text(data)
    assert ws.recv_message() == (OP_TEXT, data)


MULTI_OCTET = {name: data for name, data in VALID.items() if len(data) > 1}


@pytest.mark.parametrize("data", MULTI_OCTET.values(), ids=MULTI_OCTET.keys())
def test_valid_code_points_split_across_fragments_are_accepted(ws, data):
    ws.send_raw(octet_fragments(data))
    assert ws.recv_message() == (OP_TEXT, data)


def test_6_2_3_valid_text_split_mid_code_point_into_two_fragments(ws):
    data = "Hello-µ@ßöäüàá-UTF-8!!".encode()
    cut = data.index("µ".encode()) + 1
    ws.send_raw(
        encode_frame(OP_TEXT, data[:cut], fin=False) + encode_frame(OP_CONTINUATION, data[cut:])
    )
    assert ws.recv_text() == data.decode()


@pytest.mark.parametrize("data", INVALID.values(), ids=INVALID.keys())
def test_invalid_utf8_in_one_frame_fails_with_1007(ws, data):
    ws.send_text(data)
    ws.fail_with(1007)


@pytest.mark.parametrize("data", INVALID.values(), ids=INVALID.keys())
def test_invalid_utf8_split_across_fragments_fails_with_1007(ws, data):
    ws.send_raw(octet_fragments(b"ok " + data))
    ws.fail_with(1007)


def test_6_14_message_ending_mid_code_point_fails_with_1007(ws):
    """Each fragment alone could be the start of valid text; the message as a whole
    ends inside a code point."""
    ws.send_raw(
        encode_frame(OP_TEXT, "κόσμε".encode(), fin=False)
        + encode_frame(OP_CONTINUATION, b"\xce", fin=True)
    )
    ws.fail_with(1007)


def test_6_4_invalid_first_fragment_fails_with_1007_by_the_end_of_the_message(ws):
    """Autobahn 6.4.x accepts failing either at once ("fail fast") or when the message
    ends; either way the close is 1007."""
    ws.send_frame(OP_TEXT, "κόσμε".encode() + b"\xf4\x90\x80\x80", fin=False)
    try:
        ws.send_frame(OP_CONTINUATION, b"edited", fin=True)
    except OSError:
        pass
    ws.fail_with(1007)


@pytest.mark.parametrize("bad", [b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff"])
def test_6_4_fail_fast_on_an_invalid_fragment(ws, bad):
    """Stricter than Autobahn requires: the server checks each fragment as it arrives
    (incremental decoding), so it fails before the message ends. No final fragment is
    ever sent here."""
    ws.send_frame(OP_TEXT, "κόσμε".encode() + bad, fin=False)
    ws.fail_with(1007)


def test_incomplete_code_point_at_a_fragment_end_is_not_a_failure_yet(ws):
    ws.send_frame(OP_TEXT, "κόσμε".encode()[:-1], fin=False)
    ws.send_frame(OP_PING, b"still reading")
    assert ws.recv_frame().payload == b"still reading"
    ws.send_frame(OP_CONTINUATION, "κόσμε".encode()[-1:], fin=True)
    assert ws.recv_text() == "κόσμε"


def test_invalid_utf8_in_binary_message_is_not_checked(ws):
    data = b"\xff\xfe\xed\xa0\x80\xc0\xaf"
    ws.send_binary(data)
    assert ws.recv_binary() == data
