"""Autobahn 12.x / 13.x: permessage-deflate (RFC 7692).

The server does not negotiate compression: an offer is declined by leaving
Sec-WebSocket-Extensions out of the 101 (RFC 6455 9.1), the connection then works
uncompressed, and a frame with RSV1 set (a compressed frame) is a protocol error.
"""

from __future__ import annotations

import pytest

from .rawclient import OP_TEXT, RawWebSocket

pytestmark = pytest.mark.timeout(20)

OFFERS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    "x-webkit-deflate-frame",
    "permessage-deflate; server_max_window_bits=10, permessage-deflate",
]


@pytest.fixture(params=OFFERS)
def offered(request, echo_server):
    with RawWebSocket.connect(
        echo_server.host,
        echo_server.port,
        "/echo/",
        extra_headers=[("Sec-WebSocket-Extensions", request.param)],
    ) as ws:
        yield ws


def test_offered_extension_is_declined(offered):
    negotiated = offered.response.header("Sec-WebSocket-Extensions")
    if negotiated is not None:
        pytest.fail(
            f"the server now negotiates {negotiated!r}: add Autobahn 12.x/13.x tests for it here "
            "(compressed echo at several sizes, context takeover, window bits)"
        )


def test_connection_after_declined_offer_is_uncompressed(offered):
    offered.send_text("plain " * 50)
    frame = offered.recv_frame()
    assert (frame.opcode, frame.rsv, frame.payload) == (OP_TEXT, 0, b"plain " * 50)


def test_compressed_frame_after_declined_offer_fails_with_1002(offered):
    offered.send_frame(OP_TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4)
    offered.fail_with(1002)
