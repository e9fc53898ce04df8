"""Cross-site WebSocket hijacking and Host: the server answers 403 to a handshake whose
Origin names a foreign site or whose Host is not allowed, before any consumer sees it.

Real server, real sockets; the clients are websocket-client and, for requests no library
sends (no Host, two Origins), raw bytes.
"""

from __future__ import annotations

import contextlib
import logging
import socket

import pytest
import websocket
from django.test import override_settings

from geventchannels.routing import route
from geventchannels.server import handshake
from tests.livesrv import LiveServer, Recorder

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def fresh_refusal_log(monkeypatch):
    """Each test sees its own refusals logged (the log remembers origins per process)."""
    monkeypatch.setattr(handshake, "_refusals_seen", set())


def echo(message) -> None:
    message.reply_channel.send({"text": message["text"]})


@contextlib.contextmanager
def serve(allowed_hosts, debug=False, use_x_forwarded_host=False, **server_settings):
    """A live server started under these Django settings (read once, at start)."""
    connects = Recorder(reply={"accept": True})
    routing = [route("websocket.connect", connects), route("websocket.receive", echo)]
    with override_settings(
        ALLOWED_HOSTS=allowed_hosts, DEBUG=debug, USE_X_FORWARDED_HOST=use_x_forwarded_host
    ):
        server = LiveServer(routing, **server_settings).start()
    server.connects = connects
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def site():
    """ALLOWED_HOSTS = ["example.com", ".trusted.org"]."""
    with serve(["example.com", ".trusted.org"]) as server:
        yield server


def status(server, host: str | None = "example.com", origin: str | None = None) -> int:
    """The handshake's answer: 101 (and an echo works) or the HTTP status refusing it."""
    options: dict = {"timeout": 5}
    if host is not None:
        options["host"] = host
    if origin is None:
        options["suppress_origin"] = True
    else:
        options["origin"] = origin
    try:
        ws = websocket.create_connection(server.ws_url + "/chat/", **options)
    except websocket.WebSocketBadStatusException as error:
        return error.status_code
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
    finally:
        ws.close()
    return 101


def raw_status(server, headers: list[str]) -> int:
    request = (
        "GET /chat/ HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + "".join(f"{line}\r\n" for line in headers)
        + "\r\n"
    )
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(request.encode("latin-1"))
        return int(sock.recv(4096).split(b" ", 2)[1])


# -- Origin ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://example.com",
        "http://example.com:8080",  # neither scheme nor port is compared (Django's rule)
        "https://trusted.org",
        "https://chat.trusted.org",
        "HTTPS://EXAMPLE.COM",
    ],
)
def test_an_origin_in_allowed_hosts_is_accepted(site, origin):
    assert status(site, origin=origin) == 101


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://example.com.evil.example",
        "https://trusted.org.evil.example",
        "https://notexample.com",
        "null",  # sandboxed frames, file: pages, some redirects: foreign
        "file://",
        "not a url",
        "https://user@evil.example",
    ],
)
def test_a_foreign_origin_gets_403_and_never_reaches_a_consumer(site, origin):
    assert status(site, origin=origin) == 403
    assert status(site, origin="https://example.com") == 101
    assert len(site.connects.messages) == 1  # only the allowed handshake


def test_a_handshake_without_origin_is_allowed(site):
    """Non-browser clients send no Origin, and no browser page can leave it out."""
    assert status(site, origin=None) == 101


def test_two_origin_headers_are_refused(site):
    headers = ["Host: example.com", "Origin: https://example.com", "Origin: https://evil.example"]
    assert raw_status(site, headers) == 400  # websockets' handshake check refuses it first
    assert raw_status(site, headers[:2]) == 101
    assert len(site.connects.messages) == 1


def test_websocket_allowed_origins_replaces_allowed_hosts_for_origins():
    with serve(
        ["example.com"], WEBSOCKET_ALLOWED_ORIGINS=["app.example.net", ".cdn.example.org"]
    ) as running:
        assert status(running, origin="https://app.example.net") == 101
        assert status(running, origin="https://eu.cdn.example.org") == 101
        assert status(running, origin="https://example.com") == 403
        assert status(running, host="app.example.net") == 403  # Host: still ALLOWED_HOSTS


def test_a_star_allows_every_origin_but_null_unless_listed():
    with serve(["example.com"], WEBSOCKET_ALLOWED_ORIGINS=["*"]) as running:
        assert status(running, origin="https://anything.example") == 101
        assert status(running, origin="null") == 403
    with serve(["example.com"], WEBSOCKET_ALLOWED_ORIGINS="*, null") as running:
        assert status(running, origin="null") == 101


def test_allowed_hosts_star_still_refuses_foreign_origins_by_the_same_origin_rule():
    """ALLOWED_HOSTS = ["*"] lets any Host be served; it does not let every site's pages
    open sockets with the visitor's cookies: the Origin must then name the Host."""
    with serve(["*"]) as running:
        assert status(running, host="anything.example", origin="https://anything.example") == 101
        assert (
            status(running, host="anything.example:8000", origin="http://anything.example") == 101
        )
        assert status(running, host="anything.example", origin="https://other.example") == 403
        assert status(running, host="anything.example") == 101  # no Origin: not a browser
        assert status(running, origin="null") == 403
    with serve(["*"], WEBSOCKET_ALLOWED_ORIGINS=["*"]) as running:
        assert status(running, host="anything.example", origin="https://other.example") == 101


# -- Host -----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "example.com.evil.example", "EVIL.example:80"])
def test_a_host_not_in_allowed_hosts_gets_403(site, host):
    assert status(site, host=host, origin="https://example.com") == 403
    assert not site.connects.messages


@pytest.mark.parametrize(
    "headers", [[], ["Host: bad host"], ["Host:"]], ids=["none", "bad", "empty"]
)
def test_a_missing_or_malformed_host_is_refused(site, headers):
    # The HTTP parser answers 400 to what is not a host at all, the policy 403 to the rest.
    assert raw_status(site, headers) in (400, 403)
    assert raw_status(site, ["Host: example.com"]) == 101
    assert len(site.connects.messages) == 1


def test_host_check_can_be_turned_off():
    with serve(["example.com"], WEBSOCKET_CHECK_HOST=False) as running:
        assert status(running, host="internal.local:8000") == 101
        assert status(running, host="internal.local", origin="https://evil.example") == 403


def test_x_forwarded_host_is_checked_when_django_uses_it():
    with serve(["example.com"], use_x_forwarded_host=True) as running:
        behind_proxy = ["Host: backend:8000", "X-Forwarded-Host: example.com"]
        assert raw_status(running, behind_proxy) == 101
        assert raw_status(running, ["Host: example.com", "X-Forwarded-Host: evil.example"]) == 403


# -- DEBUG with no ALLOWED_HOSTS: Django's local hosts -------------------------------------------


@pytest.mark.parametrize(
    "host, origin, expected",
    [
        ("localhost:8000", "http://localhost:3000", 101),
        ("127.0.0.1:8000", "http://127.0.0.1:8000", 101),
        ("[::1]:8000", "http://[::1]:8000", 101),
        ("app.localhost", "http://app.localhost:8000", 101),
        ("localhost:8000", "https://evil.example", 403),
        ("example.com", None, 403),
    ],
)
def test_debug_with_empty_allowed_hosts_allows_the_local_hosts(host, origin, expected):
    with serve([], debug=True) as running:
        assert status(running, host=host, origin=origin) == expected


def test_without_debug_empty_allowed_hosts_allows_nothing():
    with serve([], debug=False) as running:
        assert status(running, host="localhost") == 403


# -- logging --------------------------------------------------------------------------------


def test_a_refusal_is_logged_once_per_origin_with_the_reason(site, caplog):
    caplog.set_level(logging.WARNING, "geventchannels.server.websocket")
    for _ in range(5):
        assert status(site, origin="https://evil.example") == 403
    assert status(site, origin="https://other.example") == 403
    assert status(site, host="evil.example") == 403
    lines = [r.getMessage() for r in caplog.records if "403" in r.getMessage()]
    assert len(lines) == 3, lines
    assert "'https://evil.example' is not allowed by ALLOWED_HOSTS" in lines[0]
    assert "WEBSOCKET_ALLOWED_ORIGINS" in lines[0]  # what to change
    assert "'https://other.example'" in lines[1]
    assert "Host 'evil.example' is not in ALLOWED_HOSTS" in lines[2]


def test_past_many_distinct_origins_refusals_are_only_counted(site, caplog, monkeypatch):
    monkeypatch.setattr(handshake, "REFUSALS_LOGGED", 2)
    monkeypatch.setattr(handshake._more_refusals, "reporter", None)
    caplog.set_level(logging.WARNING, "geventchannels.server.websocket")
    for number in range(6):
        assert status(site, origin=f"https://evil{number}.example") == 403
    lines = [r.getMessage() for r in caplog.records if "403" in r.getMessage()]
    assert len(lines) == 3, lines
    assert lines[2].startswith("1 WebSocket handshake(s) answered 403 for origins or hosts")
    reporter = handshake._more_refusals.reporter
    if reporter is not None:
        reporter.kill()
        handshake._more_refusals.reporter = None
        handshake._more_refusals.count = 0


# -- the settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, clean",
    [
        (None, None),
        (["Example.com", " .cdn.example "], ["example.com", ".cdn.example"]),
        ("example.com, null", ["example.com", "null"]),
        ((), []),
    ],
)
def test_allowed_origins_setting_takes_lists_and_comma_separated_text(value, clean):
    from geventchannels import conf

    assert conf.BY_NAME["WEBSOCKET_ALLOWED_ORIGINS"].clean(value, "x") == clean


@pytest.mark.parametrize("value", [5, ["example.com", 5], {"example.com": 1}, True])
def test_a_wrong_allowed_origins_setting_is_a_configuration_error(value):
    from geventchannels import conf

    with override_settings(GEVENTCHANNELS={"WEBSOCKET_ALLOWED_ORIGINS": value}):
        (problem,) = conf.problems()
    assert "WEBSOCKET_ALLOWED_ORIGINS" in problem and "list of host patterns" in problem
