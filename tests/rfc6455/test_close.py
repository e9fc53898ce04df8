"""Autobahn 7.x: the closing handshake (RFC 6455 5.5.1, 7.1, 7.4).

The server answers a client's close with a close (echoing the status code), ignores data
that follows a close, and then closes TCP itself (7.1.1: the server closes first). A close
payload is empty or a 2-byte code plus a UTF-8 reason, 125 bytes at most; codes outside
the registered or private ranges are a protocol error (1002) and an invalid reason is 1007.
"""

from __future__ import annotations

import gevent
import pytest

from tests.livesrv import live_server

from .consumers import ECHO_ROUTING
from .rawclient import OP_CLOSE, OP_PING, OP_TEXT, RawWebSocket, close_payload, encode_frame

pytestmark = pytest.mark.timeout(20)


def assert_clean_close(ws: RawWebSocket, code: int | None) -> None:
    """The server's next frame is a close with ``code`` and then TCP ends."""
    close = ws.expect_close(allow=())
    assert close.close_code == code, (
        f"expected {code}, got {close.close_code} {close.close_reason!r}"
    )
    assert ws.wait_tcp_close() == b""


def test_7_1_1_echo_then_close(ws):
    ws.send_text("Hello World!")
    assert ws.recv_text() == "Hello World!"
    ws.send_close(1000)
    assert_clean_close(ws, 1000)


def test_7_3_1_close_with_empty_payload_is_answered(ws):
    """An empty close means "no status code" (1005, never sent); the server answers with
    an empty close or 1000."""
    ws.send_frame(OP_CLOSE, b"")
    close = ws.expect_close(allow=())
    assert close.close_code in (None, 1000)
    assert ws.wait_tcp_close() == b""


def test_7_3_2_close_with_one_byte_payload_fails_with_1002(ws):
    ws.send_frame(OP_CLOSE, b"\x03")
    ws.fail_with(1002)


@pytest.mark.parametrize(
    "reason",
    [b"", b"Hello World!", "ö✓".encode() * 10, b"*" * 123],
    ids=["7.3.3-no-reason", "7.3.4-reason", "utf8-reason", "7.3.5-123"],
)
def test_7_3_3_to_7_3_5_close_with_reason_is_echoed(ws, reason):
    ws.send_close(1000, reason)
    assert_clean_close(ws, 1000)


def test_7_3_6_close_payload_over_125_bytes_fails_with_1002(ws):
    ws.send_close(1000, b"*" * 124)
    ws.fail_with(1002)


@pytest.mark.parametrize(
    "code",
    [
        1000,
        1001,
        1002,
        1003,
        1007,
        1008,
        1009,
        1010,
        1011,
        1012,
        1013,
        1014,
        3000,
        3999,
        4000,
        4999,
    ],
)
def test_7_7_valid_close_code_is_echoed(ws, code):
    ws.send_close(code, b"bye")
    assert_clean_close(ws, code)


@pytest.mark.parametrize(
    "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
def test_7_9_7_13_invalid_close_code_fails_with_1002(ws, code):
    ws.send_close(code)
    ws.fail_with(1002)


def test_7_5_1_close_reason_not_utf8_fails_with_1007(ws):
    ws.send_close(1000, "κόσμε".encode() + b"\xed\xa0\x80edited")
    ws.fail_with(1007)


def test_7_1_2_second_close_is_ignored(ws):
    ws.send_raw(encode_frame(OP_CLOSE, close_payload(1000)) * 2)
    assert_clean_close(ws, 1000)


@pytest.mark.parametrize(
    "after",
    [encode_frame(OP_TEXT, "after close"), encode_frame(OP_PING, b"after close")],
    ids=["7.1.4-text", "7.1.3-ping"],
)
def test_7_1_3_7_1_4_frames_after_close_are_ignored(ws, after):
    ws.send_raw(encode_frame(OP_CLOSE, close_payload(1000)) + after)
    assert_clean_close(ws, 1000)


def test_7_1_5_close_inside_a_fragmented_message_drops_the_message(ws):
    """The unfinished message is never delivered and the closing handshake completes.
    Autobahn checks only that the close is clean; the server answers 1002 here
    (websockets' choice: the close left a message incomplete) rather than echoing 1000."""
    ws.send_raw(
        encode_frame(OP_TEXT, "fragment1", fin=False)
        + encode_frame(OP_CLOSE, close_payload(1000))
        + encode_frame(0, "fragment2", fin=True)
    )
    close = ws.expect_close(allow=())
    assert close.close_code in (1000, 1002)
    assert ws.wait_tcp_close() == b""


def test_7_1_6_close_after_a_large_message_comes_after_its_echo(ws):
    big = b"B" * 256 * 1024
    ws.send_raw(encode_frame(OP_TEXT, big) + encode_frame(OP_CLOSE, close_payload(1000)))
    # The echo may or may not make it out before the server's close, but nothing may
    # follow the close, and TCP must end.
    close = ws.expect_close(timeout=10)
    assert close.close_code == 1000
    assert ws.wait_tcp_close() == b""


def test_server_closes_tcp_first_without_the_client_closing(ws):
    """RFC 6455 7.1.1: after the closing handshake the server closes TCP; the client
    here never closes its socket, so an EOF can only come from the server."""
    ws.send_close(1000)
    ws.expect_close(allow=())
    assert ws.wait_tcp_close(timeout=5) == b""


@pytest.mark.parametrize(("request_text", "code"), [("close", 1000), ("close 4321", 4321)])
def test_consumer_close_reply_starts_the_closing_handshake(echo_server, request_text, code):
    """A consumer's ``{"close": True}`` reply sends close 1000 (ASGI 1.0), a code is sent
    as given; the server then waits for the client's close and ends TCP."""
    with RawWebSocket.connect(echo_server.host, echo_server.port, "/close/") as ws:
        ws.send_text(request_text)
        close = ws.expect_close(allow=())
        assert close.close_code == code
        ws.send_close(code)
        assert ws.wait_tcp_close() == b""


@pytest.mark.timeout(15)
def test_client_that_never_answers_a_close_is_dropped(echo_server):
    """RFC 6455 7.1.1 lets the server close TCP when the client does not finish the
    closing handshake; the server gives it a few seconds (CLOSE_TIMEOUT), never forever."""
    with RawWebSocket.connect(echo_server.host, echo_server.port, "/close/") as ws:
        ws.send_text("close 4000")
        assert ws.expect_close(allow=()).close_code == 4000
        assert ws.wait_tcp_close(timeout=10) == b""


def test_server_shutdown_closes_websockets_with_1001():
    """A stopping server says "going away" (1001) so clients know to reconnect, then
    ends TCP once the client answers."""
    manager = live_server(ECHO_ROUTING)
    server = manager.__enter__()
    stopper = None
    try:
        with RawWebSocket.connect(server.host, server.port, "/echo/") as ws:
            ws.send_text("before shutdown")
            assert ws.recv_text() == "before shutdown"
            stopper = gevent.spawn(manager.__exit__, None, None, None)
            assert ws.expect_close(allow=()).close_code == 1001
            ws.send_close(1001)
            assert ws.wait_tcp_close() == b""
        stopper.join(timeout=10)
        assert stopper.successful(), stopper.exception
    finally:
        if stopper is None:
            manager.__exit__(None, None, None)
