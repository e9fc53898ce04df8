"""PROXY_HEADERS: one rule (server/proxy.py) for what Django sees on the WSGI fast path
and for the ``client`` / ``scheme`` of routed ``http.request`` and ``websocket.connect``
messages (issue 8.5: the two paths used to disagree on ws/wss and on bad ports)."""

from __future__ import annotations

import http.client

import pytest
import websocket

from geventchannels.routing import route
from geventchannels.server.handler import RequestHeaders
from geventchannels.server.proxy import forwarded
from tests.livesrv import Recorder, live_server

pytestmark = pytest.mark.timeout(30)

PEER = "peer"  # the socket's own address: the client the test connected from

# headers -> (client host, client port, secure)
CASES = {
    "all-three": (
        {
            "X-Forwarded-For": "10.1.2.3, 10.0.0.1",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Port": "8443",
        },
        ("10.1.2.3", 8443, True),
    ),
    "for-only": ({"X-Forwarded-For": " 10.9.9.9 "}, ("10.9.9.9", 0, False)),
    "bad-port": (
        {"X-Forwarded-For": "10.1.1.1", "X-Forwarded-Port": "https"},
        ("10.1.1.1", 0, False),
    ),
    "wss-is-secure": ({"X-Forwarded-Proto": "wss"}, (PEER, PEER, True)),
    "proto-case-and-spaces": ({"X-Forwarded-Proto": " HTTPS "}, (PEER, PEER, True)),
    "ws-is-plain": ({"X-Forwarded-Proto": "ws"}, (PEER, PEER, False)),
    "unknown-proto-ignored": ({"X-Forwarded-Proto": "ftp"}, (PEER, PEER, False)),
    "port-without-for-ignored": ({"X-Forwarded-Port": "9999"}, (PEER, PEER, False)),
}


def expected(case: str, peer: tuple[str, int]) -> tuple[str, int, bool]:
    host, port, secure = CASES[case][1]
    return (peer[0] if host == PEER else host, peer[1] if port == PEER else port, secure)


def environ_view(environ, start_response):
    """What Django would see: REMOTE_ADDR, REMOTE_PORT, wsgi.url_scheme."""
    body = " ".join(environ[key] for key in ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


def accept(message) -> None:
    message.reply_channel.send({"accept": True})


@pytest.fixture(scope="module")
def proxied():
    routed = Recorder(reply={"status": 204})
    connected = Recorder()

    def accept_and_record(message) -> None:
        connected(message)
        accept(message)

    routing = [
        route("http.request", routed, path=r"^/routed/$"),
        route("websocket.connect", accept_and_record),
    ]
    with live_server(routing, wsgi_app=environ_view, PROXY_HEADERS=True) as server:
        yield server, routed, connected


def http_get(server, path: str, headers: dict) -> tuple[bytes, tuple[str, int]]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request("GET", path, headers=headers)
        peer = connection.sock.getsockname()[:2]
        return connection.getresponse().read(), peer
    finally:
        connection.close()


@pytest.mark.parametrize("case", CASES)
def test_fast_path_environ_follows_the_rule(proxied, case):
    server, _, _ = proxied
    body, peer = http_get(server, "/fast/", CASES[case][0])
    host, port, scheme = body.decode().split()
    assert (host, int(port), scheme == "https") == expected(case, peer)
    assert scheme in ("http", "https")


@pytest.mark.parametrize("case", CASES)
def test_routed_request_message_follows_the_rule(proxied, case):
    server, routed, _ = proxied
    before = len(routed.messages)
    _, peer = http_get(server, "/routed/", CASES[case][0])
    message = routed.wait_count(before + 1)[-1]
    client = message["client"]
    assert (client[0], client[1], message["scheme"] == "https") == expected(case, peer)
    assert message["scheme"] in ("http", "https")


@pytest.mark.parametrize("case", CASES)
def test_websocket_connect_message_follows_the_rule(proxied, case):
    server, _, connected = proxied
    before = len(connected.messages)
    ws = websocket.create_connection(
        server.ws_url + "/ws/", timeout=5, header=[f"{k}: {v}" for k, v in CASES[case][0].items()]
    )
    try:
        peer = ws.sock.getsockname()[:2]
        message = connected.wait_count(before + 1)[-1]
    finally:
        ws.close()
    client = message["client"]
    assert (client[0], client[1], message["scheme"] == "wss") == expected(case, peer)
    assert message["scheme"] in ("ws", "wss")


def test_without_proxy_headers_nothing_forwarded_is_believed():
    routed = Recorder(reply={"status": 204})
    with live_server(
        [route("http.request", routed, path=r"^/routed/$")], wsgi_app=environ_view
    ) as srv:
        headers = CASES["all-three"][0]
        body, peer = http_get(srv, "/fast/", headers)
        assert body.decode() == f"{peer[0]} {peer[1]} http"
        _, peer = http_get(srv, "/routed/", headers)
        message = routed.wait_for()
        assert message["client"] == list(peer) and message["scheme"] == "http"


def test_only_the_first_value_of_a_repeated_header_counts():
    headers = RequestHeaders(
        [
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-For", "10.0.0.7"),
            ("X-Forwarded-For", "10.0.0.8"),
        ]
    )
    assert forwarded(headers) == (("10.0.0.7", 0), True)
