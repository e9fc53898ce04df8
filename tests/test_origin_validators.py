"""Origin validators: ALLOWED_HOSTS rules, header forms, methods, and the real server's 403."""

from __future__ import annotations

import pytest
import websocket
from django.test import override_settings

from geventchannels.exceptions import DenyConnection
from geventchannels.message import Message
from geventchannels.routing import route
from geventchannels.security.websockets import (
    AllowedHostsOnlyOriginValidator,
    BaseOriginValidator,
    allowed_hosts_only,
    origin_host,
)
from geventchannels.test import WSClient, apply_routes
from geventchannels.test.base import TestLayers
from tests.livesrv import live_server

accepted = []


@allowed_hosts_only
def connect(message, **kwargs):
    accepted.append(message["path"])
    message.reply_channel.send({"accept": True})


def connect_message(headers) -> Message:
    return Message(
        {"reply_channel": "r", "path": "/", "headers": headers}, "websocket.connect", None
    )


def allowed(origin, allowed_hosts, debug=False) -> bool:
    with override_settings(ALLOWED_HOSTS=allowed_hosts, DEBUG=debug):
        try:
            connect(connect_message([[b"origin", origin.encode()]]))
        except DenyConnection:
            return False
    return True


@pytest.fixture(autouse=True)
def _reset():
    accepted.clear()


@pytest.mark.parametrize(
    "origin, hosts, expected",
    [
        ("http://example.com", ["example.com"], True),
        ("https://example.com:8443", ["example.com"], True),  # the port is not compared
        ("http://EXAMPLE.com", ["example.com"], True),
        ("http://evil.com", ["example.com"], False),
        ("http://example.com.evil.com", ["example.com"], False),
        ("http://chat.example.com", [".example.com"], True),
        ("http://example.com", [".example.com"], True),
        ("http://badexample.com", [".example.com"], False),
        ("http://anything.org", ["*"], True),
        ("http://[::1]:8000", ["[::1]"], True),
        ("http://127.0.0.1:8000", ["127.0.0.1"], True),
        ("null", ["*"], False),
        ("", ["*"], False),
        ("not a url", ["*"], False),
    ],
)
def test_allowed_hosts_rules(origin, hosts, expected):
    assert allowed(origin, hosts) is expected


def test_debug_with_no_allowed_hosts_allows_local_hosts_only():
    assert allowed("http://localhost:8000", [], debug=True)
    assert allowed("http://sub.localhost", [], debug=True)
    assert allowed("http://[::1]", [], debug=True)
    assert not allowed("http://example.com", [], debug=True)
    assert not allowed("http://localhost", [], debug=False)


@pytest.mark.parametrize(
    "headers",
    [
        [[b"host", b"x"], [b"Origin", b"http://example.com"]],
        [(b"origin", b"http://example.com")],
        {b"origin": b"http://example.com"},
        {"Origin": "http://example.com"},
        [["origin", "http://example.com"]],
    ],
)
def test_header_lists_and_dicts_are_read(headers):
    with override_settings(ALLOWED_HOSTS=["example.com"]):
        connect(connect_message(headers))
    assert accepted == ["/"]


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [[b"host", b"example.com"]],
        [[b"origin"]],
        [[b"origin", "http://ex\u00e4mple.com"]],
        [[b"origin", "http://ex\u00e4mple.com".encode()]],
    ],
)
def test_missing_or_non_ascii_origin_is_refused(headers):
    with override_settings(ALLOWED_HOSTS=["*"]), pytest.raises(DenyConnection):
        connect(connect_message(headers))


def test_message_without_headers_is_refused():
    message = Message({"reply_channel": "r", "path": "/"}, "websocket.connect", None)
    with pytest.raises(DenyConnection):
        connect(message)


def test_wraps_the_consumer_and_passes_arguments():
    seen = []

    @AllowedHostsOnlyOriginValidator
    def consumer(message, room):
        """Docs."""
        seen.append(room)
        return "done"

    assert consumer.__name__ == "consumer" and consumer.__doc__ == "Docs."
    with override_settings(ALLOWED_HOSTS=["*"]):
        assert consumer(connect_message([[b"origin", b"http://a.b"]]), room="lobby") == "done"
    assert seen == ["lobby"]


def test_decorates_methods_of_consumer_classes():
    class Consumer:
        def __init__(self):
            self.seen = []

        @allowed_hosts_only
        def connect(self, message, **kwargs):
            self.seen.append(kwargs)

    consumer = Consumer()
    with override_settings(ALLOWED_HOSTS=["good.org"]):
        consumer.connect(connect_message([[b"origin", b"http://good.org"]]), room="x")
        with pytest.raises(DenyConnection):
            consumer.connect(connect_message([[b"origin", b"http://bad.org"]]))
    assert consumer.seen == [{"room": "x"}]
    assert isinstance(Consumer.__dict__["connect"], BaseOriginValidator)


def test_base_validator_subclass_and_unimplemented():
    class OnlyHttps(BaseOriginValidator):
        def validate_origin(self, message, origin):
            return origin.startswith("https://")

    consumer = OnlyHttps(lambda message: "ok")
    assert consumer(connect_message([[b"origin", b"https://x"]])) == "ok"
    with pytest.raises(DenyConnection):
        consumer(connect_message([[b"origin", b"http://x"]]))
    with pytest.raises(NotImplementedError):
        BaseOriginValidator(lambda message: None)(connect_message([[b"origin", b"http://x"]]))


def test_origin_host():
    assert origin_host("https://Example.COM.:443") == "example.com"
    assert origin_host("http://[2001:db8::1]:80") == "[2001:db8::1]"
    assert origin_host("null") == ""


@override_settings(ALLOWED_HOSTS=["example.com"])
def test_through_the_test_client():
    with TestLayers(), apply_routes([route("websocket.connect", connect)]):
        client = WSClient()
        client.set_header("origin", "http://example.com")
        client.send_and_consume("websocket.connect")
        other = WSClient()
        other.set_header("origin", "http://evil.com")
        with pytest.raises(AssertionError, match="Connection rejected"):
            other.send_and_consume("websocket.connect")


class HttpsOnly(BaseOriginValidator):
    def validate_origin(self, message, origin):
        return origin.startswith("https://")


@HttpsOnly
def https_connect(message, **kwargs):
    accepted.append(message["path"])
    message.reply_channel.send({"accept": True})


def test_real_server_answers_a_refused_origin_with_403():
    # The server's own origin policy lets every origin through, so the validator decides.
    routes = [route("websocket.connect", https_connect)]
    with live_server(routes, WEBSOCKET_ALLOWED_ORIGINS=["*"]) as server:
        ws = websocket.create_connection(
            server.ws_url + "/chat/", origin="https://example.com", timeout=5
        )
        ws.close()
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(
                server.ws_url + "/chat/", origin="http://example.com", timeout=5
            )
        assert refused.value.status_code == 403
    assert accepted == ["/chat/"]
