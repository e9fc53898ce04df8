"""The handler's own request parsing and response writing on the HTTP fast path, through
real sockets: the environ built from the request head, malformed heads, bodies of every
shape, HTTP/1.0, and keep-alive connections taking turns."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from geventchannels.server.http11 import MAX_HEADERS, RequestHeaders, parse_head
from tests.livesrv import live_server

pytestmark = pytest.mark.timeout(20)

ENVIRON_KEYS = (
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_PROTOCOL",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "REMOTE_ADDR",
)
BIG = b"x" * 200_000


class Site:
    """A WSGI application that shows what it was given and answers in several shapes."""

    def __init__(self):
        self.served: list[str] = []
        self.on_request = None

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        self.served.append(path)
        if self.on_request is not None:
            self.on_request(path)
        if path == "/big/":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [BIG]
        if path == "/chunks/":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"one,", b"", b"two,", b"three"])
        if path == "/empty/":
            start_response("204 No Content", [])
            return []
        body = environ["wsgi.input"].read()
        shown = {key: environ.get(key) for key in ENVIRON_KEYS}
        shown["headers"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        shown["body"] = body.decode("latin-1")
        data = json.dumps(shown).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]


@pytest.fixture(scope="module")
def site():
    return Site()


@pytest.fixture(scope="module")
def server(site):
    with live_server(wsgi_app=site) as srv:
        yield srv


def raw_exchange(server, data: bytes) -> bytes:
    """Send ``data``, return everything the server answers until it closes."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def get_json(server, head: bytes) -> dict:
    answer = raw_exchange(server, head)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_environ_from_the_request_head(server):
    shown = get_json(
        server,
        (
            b"POST /a%20b/?x=1&y=%20 HTTP/1.1\r\nHost: example.test\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 3\r\n"
            b"X-Dup: one\r\nx-dup: two\r\nCookie: a=1\r\nCookie: b=2\r\n"
            b"X-Spaced: \t first  second \r\nX_Underscore: dropped\r\n"
            b"Connection: close\r\n\r\nabc"
        ),
    )
    assert shown["REQUEST_METHOD"] == "POST"
    assert shown["PATH_INFO"] == "/a b/"
    assert shown["QUERY_STRING"] == "x=1&y=%20"
    assert shown["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (shown["CONTENT_TYPE"], shown["CONTENT_LENGTH"]) == ("text/plain", "3")
    assert shown["REMOTE_ADDR"] == "127.0.0.1"
    assert shown["body"] == "abc"
    headers = shown["headers"]
    assert headers["HTTP_HOST"] == "example.test"
    assert headers["HTTP_X_DUP"] == "one,two"
    assert headers["HTTP_COOKIE"] == "a=1; b=2"
    assert headers["HTTP_X_SPACED"] == "first  second"
    assert "HTTP_X_UNDERSCORE" not in headers
    assert "HTTP_CONTENT_TYPE" not in headers and "HTTP_CONTENT_LENGTH" not in headers


def test_chunked_upload_ignores_a_content_length(server):
    shown = get_json(
        server,
        (
            b"POST /up/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n"
            b"Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        ),
    )
    assert shown["body"] == "abcde"
    assert shown["CONTENT_LENGTH"] is None


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded first\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: five\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Many: 1\r\n" * MAX_HEADERS + b"\r\n", 431),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    ],
)
def test_malformed_heads_are_refused_and_never_reach_the_application(server, site, head, status):
    served = len(site.served)
    answer = raw_exchange(server, head)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:100]
    assert b"Connection: close" in answer
    assert len(site.served) == served


def test_response_shapes_over_one_keep_alive_connection(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request("GET", "/big/")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == str(len(BIG))
        assert response.getheader("Date", "").endswith(" GMT")
        assert response.read() == BIG

        conn.request("GET", "/chunks/")
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == b"one,two,three"

        conn.request("GET", "/empty/")
        response = conn.getresponse()
        assert response.status == 204
        assert response.read() == b""

        conn.request("POST", "/echo/", body=b"payload")
        response = conn.getresponse()
        assert json.loads(response.read())["body"] == "payload"
    finally:
        conn.close()


def test_http_1_0_closes_unless_kept_alive(server):
    answer = raw_exchange(server, b"GET /chunks/ HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in answer
    assert answer.endswith(b"one,two,three")  # no chunked framing for HTTP/1.0

    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /x/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = sock.recv(65536)
        assert b"Connection: keep-alive" in first
        sock.sendall(b"GET /y/ HTTP/1.0\r\n\r\n")
        assert b'"PATH_INFO": "/y/"' in sock.recv(65536)


def test_a_busy_keep_alive_connection_lets_the_others_take_turns(server, site):
    """Twenty pipelined requests on one connection; a request on a second connection
    arrives while the first of them runs. It is answered after one or two of them, not
    after all twenty."""
    with (
        socket.create_connection((server.host, server.port), timeout=5) as busy,
        socket.create_connection((server.host, server.port), timeout=5) as other,
    ):

        def on_request(path):
            if path == "/turn/0/":
                other.sendall(b"GET /other/ HTTP/1.1\r\nHost: h\r\n\r\n")

        site.served.clear()
        site.on_request = on_request
        try:
            busy.sendall(
                b"".join(b"GET /turn/%d/ HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(20))
            )
            answer = b""
            while b'"PATH_INFO": "/other/"' not in answer:
                answer += other.recv(65536)
        finally:
            site.on_request = None
    assert "/other/" in site.served
    assert site.served.index("/other/") <= 2, site.served


def test_request_headers_lookups():
    headers = parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n").headers
    assert isinstance(headers, RequestHeaders)
    assert headers.get("HOST") == "h" and headers["x-A"] == "1"
    assert headers.get_all("X-A") == ["1", "2"] and headers.get_all("nope") is None
    assert headers.items() == [("Host", "h"), ("X-A", "1"), ("x-a", "2")]
    assert "host" in headers and "Content-Length" not in headers
    del headers["x-a"]
    assert headers.items() == [("Host", "h")] and headers.get("X-A") is None


def routed_reply(message) -> None:
    message.reply_channel.send({"status": 200, "content": b"routed"})


def served_by(srv, method: str, path: str) -> str:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        conn.request(method, path)
        body = conn.getresponse().read()
    finally:
        conn.close()
    return "routed" if body == b"routed" else "django"


def test_routes_on_cheap_keys_and_on_others_claim_the_right_requests(site):
    from geventchannels.routing import route

    cheap = [route("http.request", routed_reply, path=r"^/r/", method=r"^POST$")]
    with live_server(cheap, wsgi_app=site) as srv:
        for _ in range(2):  # the second time, from the remembered answers
            assert served_by(srv, "GET", "/r/") == "django"
            assert served_by(srv, "POST", "/r/") == "routed"
        assert served_by(srv, "GET", "/late/") == "django"
        srv.app.router.add_route(route("http.request", routed_reply, path=r"^/late/"))
        assert served_by(srv, "GET", "/late/") == "routed"

    whole_message = [route("http.request", routed_reply, path=r"^/s/", scheme=r"^http$")]
    with live_server(whole_message, wsgi_app=site) as srv:
        assert served_by(srv, "GET", "/s/") == "routed"
        assert served_by(srv, "GET", "/t/") == "django"
