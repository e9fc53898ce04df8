"""RFC 6455 4.2: the opening handshake, as the server sees it.

A valid request gets 101 with the right Sec-WebSocket-Accept; a request without a valid
Sec-WebSocket-Key or version 13 gets an HTTP error (4.2.1, 4.4: a wrong version is
answered with the versions the server speaks); the subprotocol is the one the
``websocket.connect`` consumer picked from those offered, or none.
"""

from __future__ import annotations

import base64

import pytest

from .rawclient import (
    OP_TEXT,
    HttpResponse,
    RawWebSocket,
    accept_key,
    encode_frame,
    upgrade_request,
)

pytestmark = pytest.mark.timeout(20)

RFC_SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def handshake(server, path: str = "/echo/", **request) -> tuple[RawWebSocket, HttpResponse]:
    ws = RawWebSocket.open_tcp(server.host, server.port)
    ws.send_raw(upgrade_request(server.host, server.port, path, **request))
    return ws, ws.read_http_response()


def refused(server, path: str = "/echo/", **request) -> HttpResponse:
    """Send a handshake that must be refused; check the server then ends the exchange."""
    ws, response = handshake(server, path, **request)
    with ws:
        assert response.status != 101, f"handshake {request!r} was accepted"
        assert response.status < 500, f"server error {response.status}: {response.body!r}"
    return response


def test_rfc_sample_key_gets_the_rfc_sample_accept(echo_server):
    assert accept_key(RFC_SAMPLE_KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    ws, response = handshake(echo_server, key=RFC_SAMPLE_KEY)
    with ws:
        assert response.status == 101
        assert response.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert response.header("Upgrade").lower() == "websocket"
        assert "upgrade" in response.header("Connection").lower()
        assert response.header("Sec-WebSocket-Protocol") is None
        assert response.header("Sec-WebSocket-Extensions") is None


def test_header_names_and_tokens_are_case_insensitive(echo_server):
    """Browsers send e.g. ``Connection: keep-alive, Upgrade`` (Firefox); tokens and header
    names are case-insensitive (RFC 6455 4.2.1, RFC 7230)."""
    ws = RawWebSocket.open_tcp(echo_server.host, echo_server.port)
    with ws:
        ws.send_raw(
            b"GET /echo/ HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: WebSocket\r\n"
            b"connection: keep-alive, UPGRADE\r\nsec-websocket-key: %s\r\n"
            b"sec-websocket-version: 13\r\n\r\n" % RFC_SAMPLE_KEY.encode()
        )
        response = ws.read_http_response()
        assert response.status == 101
        assert response.header("Sec-WebSocket-Accept") == accept_key(RFC_SAMPLE_KEY)
        ws.send_text("works")
        assert ws.recv_text() == "works"


def test_frames_follow_the_101_immediately(echo_server):
    ws, response = handshake(echo_server)
    with ws:
        assert response.status == 101
        ws.send_binary(b"\x00first")
        assert ws.recv_binary() == b"\x00first"


def test_frames_sent_right_behind_the_request_are_kept(echo_server):
    """RFC 6455 4.1 tells clients to wait for the 101, but a frame that arrives in the
    same packet as the request is read after the handshake, not lost or misparsed."""
    ws = RawWebSocket.open_tcp(echo_server.host, echo_server.port)
    with ws:
        key = RFC_SAMPLE_KEY
        ws.send_raw(
            upgrade_request(echo_server.host, echo_server.port, "/echo/", key=key)
            + encode_frame(OP_TEXT, "early bird")
        )
        response = ws.read_http_response()
        assert response.status == 101
        assert ws.recv_text() == "early bird"


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "not base64 at all!",
        base64.b64encode(b"x" * 15).decode(),
        base64.b64encode(b"x" * 17).decode(),
    ],
    ids=["missing", "empty", "not-base64", "15-bytes", "17-bytes"],
)
def test_missing_or_invalid_key_gets_400(echo_server, key):
    if key == "":
        # upgrade_request treats "" as "make one up"; send an empty header by hand.
        response = refused(echo_server, key=None, extra_headers=[("Sec-WebSocket-Key", "")])
    else:
        response = refused(echo_server, key=key)
    assert response.status == 400


@pytest.mark.parametrize("header", ["Sec-WebSocket-Key", "Sec-WebSocket-Version"])
def test_repeated_key_or_version_header_gets_400(echo_server, header):
    value = RFC_SAMPLE_KEY if header == "Sec-WebSocket-Key" else "13"
    assert refused(echo_server, extra_headers=[(header, value)]).status == 400


def test_http_1_0_handshake_is_refused(echo_server):
    """RFC 6455 4.1: the handshake is an HTTP/1.1 (or later) GET."""
    ws = RawWebSocket.open_tcp(echo_server.host, echo_server.port)
    with ws:
        request = upgrade_request(echo_server.host, echo_server.port, "/echo/")
        ws.send_raw(request.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        response = ws.read_http_response()
        assert response.status in (400, 505)


def test_missing_version_gets_400_or_426(echo_server):
    assert refused(echo_server, version=None).status in (400, 426)


@pytest.mark.parametrize("version", ["8", "12", "14", "abc"])
def test_wrong_version_names_the_supported_version(echo_server, version):
    """RFC 6455 4.4: the server MUST answer with a Sec-WebSocket-Version header listing
    the versions it supports (and 4.2.2 suggests 426 Upgrade Required)."""
    response = refused(echo_server, version=version)
    assert response.status in (400, 426)
    supported = response.header("Sec-WebSocket-Version")
    assert supported is not None and "13" in [v.strip() for v in supported.split(",")]


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD"])
def test_non_get_upgrade_is_not_a_websocket(echo_server, method):
    """RFC 6455 4.1: the handshake is a GET. Any other method with ``Upgrade:
    websocket`` is an ordinary HTTP request: the server never upgrades it and hands it
    to Django (which answers 404 for these paths)."""
    response = refused(echo_server, method=method)
    assert response.header("Sec-WebSocket-Accept") is None


def test_upgrade_header_naming_another_protocol_is_refused(echo_server):
    ws = RawWebSocket.open_tcp(echo_server.host, echo_server.port)
    with ws:
        ws.send_raw(
            b"GET /echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % RFC_SAMPLE_KEY.encode()
        )
        response = ws.read_http_response()
        assert response.status != 101 and response.header("Sec-WebSocket-Accept") is None


def test_offered_subprotocol_is_not_echoed_unless_chosen(echo_server):
    """RFC 6455 4.2.2: the server may only name a subprotocol the client offered, and
    none when the application did not choose one."""
    ws, response = handshake(echo_server, extra_headers=[("Sec-WebSocket-Protocol", "chat")])
    with ws:
        assert response.status == 101
        assert response.header("Sec-WebSocket-Protocol") is None


def test_subprotocol_chosen_by_the_connect_consumer(echo_server):
    ws, response = handshake(
        echo_server,
        "/subprotocol/",
        extra_headers=[
            ("Sec-WebSocket-Protocol", "v1.chat, v2.chat"),
            ("Sec-WebSocket-Protocol", "v3.chat"),
        ],
    )
    with ws:
        assert response.status == 101
        assert response.header("Sec-WebSocket-Protocol") == "v2.chat"
        ws.send_text("after subprotocol")
        assert ws.recv_text() == "after subprotocol"


def test_connect_consumer_refusal_is_403(echo_server):
    response = refused(echo_server, "/refuse/")
    assert response.status == 403
