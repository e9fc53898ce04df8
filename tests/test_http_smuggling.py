"""Request smuggling (RFC 9112 section 6): every way a front proxy and this server could
disagree on where a request ends is refused, on both HTTP paths (Django's WSGI fast path
and routed ``http.request``), against the real server over raw sockets. CL.CL, TE.CL and
CL.TE payloads never get a second request served."""

from __future__ import annotations

import json

import pytest

from geventchannels.routing import route
from tests.livesrv import live_server
from tests.test_server_fastpath import raw_exchange

pytestmark = pytest.mark.timeout(30)

PATHS = ["/fast/", "/routed/"]


class Site:
    """The fast path's WSGI application: reads the body, says what it got."""

    def __init__(self):
        self.served: list[str] = []

    def __call__(self, environ, start_response):
        self.served.append(environ["PATH_INFO"])
        body = environ["wsgi.input"].read()
        data = json.dumps({"path": environ["PATH_INFO"], "body": body.decode("latin-1")})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [data.encode()]


@pytest.fixture(scope="module")
def server():
    site = Site()
    routed: list[str] = []

    def consumer(message):
        routed.append(message["path"])
        data = json.dumps({"path": message["path"], "body": message["body"].decode("latin-1")})
        message.reply_channel.send({"status": 200, "content": data.encode()})

    with live_server([route("http.request", consumer, path=r"^/routed/")], wsgi_app=site) as srv:
        srv.site = site
        srv.routed = routed
        yield srv


def served(server) -> list[str]:
    return server.site.served + server.routed


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1])


def body_of(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return json.loads(body)


# -- refused heads: never reach Django or a consumer -------------------------------------

REFUSED_HEADS = {
    "CL with a plus sign": (b"Content-Length: +5\r\n", 400),
    "CL with an underscore": (b"Content-Length: 1_0\r\n", 400),
    "CL in hex": (b"Content-Length: 0x5\r\n", 400),
    "CL with a fraction": (b"Content-Length: 5.0\r\n", 400),
    "CL negative": (b"Content-Length: -5\r\n", 400),
    "CL empty": (b"Content-Length:\r\n", 400),
    "CL a non-ASCII digit": (b"Content-Length: \xb2\r\n", 400),
    "CL too many digits": (b"Content-Length: 1" + b"0" * 20 + b"\r\n", 400),
    "two different CL": (b"Content-Length: 5\r\nContent-Length: 6\r\n", 400),
    "a CL list that disagrees": (b"Content-Length: 5, 6\r\n", 400),
    "CL with a space before the colon": (b"Content-Length : 5\r\n", 400),
    "TE gzip then chunked": (b"Transfer-Encoding: gzip, chunked\r\n", 501),
    "TE chunked then identity": (b"Transfer-Encoding: chunked, identity\r\n", 400),
    "TE xchunked": (b"Transfer-Encoding: xchunked\r\n", 400),
    "TE identity": (b"Transfer-Encoding: identity\r\n", 400),
    "TE chunked twice": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
    "TE chunked then another": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", 400),
    "TE with an empty element": (b"Transfer-Encoding: , chunked\r\n", 400),
    "TE with a parameter": (b"Transfer-Encoding: chunked;q=1\r\n", 400),
    "TE obs-folded": (b"Transfer-Encoding:\r\n chunked\r\n", 400),
    "TE with a vertical tab": (b"Transfer-Encoding:\x0bchunked\r\n", 400),
    "TE with a space before the colon": (b"Transfer-Encoding : chunked\r\n", 400),
    "TE and a bad CL": (b"Transfer-Encoding: chunked\r\nContent-Length: +3\r\n", 400),
    "any obs-fold": (b"X-Folded: one\r\n two\r\n", 400),
    "a header name with a bad character": (b"X@Y: 1\r\n", 400),
    "a NUL in a value": (b"X-Nul: a\x00b\r\n", 400),
    "a bare CR in a value": (b"X-Cr: a\rb\r\n", 400),
    "a bare LF ending a line": (b"X-Lf: a\n", 400),
    "a bare CR and a bare LF apart": (b"X-Cr: a\rb\nTransfer-Encoding: chunked\r\n", 400),
    "a second Host": (b"Host: other\r\n", 400),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(REFUSED_HEADS))
def test_ambiguous_heads_are_refused_and_close_the_connection(server, path, case):
    extra, status = REFUSED_HEADS[case]
    before = len(served(server))
    answer = raw_exchange(
        server,
        b"POST %s HTTP/1.1\r\nHost: h\r\n%s\r\n0\r\n\r\nGET /smuggled/ HTTP/1.1\r\nHost: h\r\n\r\n"
        % (path.encode(), extra),
    )
    assert status_of(answer) == status
    assert b"Connection: close" in answer
    assert answer.count(b"HTTP/1.1 ") == 1
    assert len(served(server)) == before


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "head, status",
    [
        (b"POST %s HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400),  # no Host in HTTP/1.1
        (b"POST %s HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"POST %s HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        (b"POST %s HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST  %s HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"POST %s http/1.1\r\nHost: h\r\n\r\n", 400),
        (b"POST %s HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"POST %s HTTP/1.1\nHost: h\n\n", 400),
    ],
)
def test_bad_request_lines_and_hosts_are_refused(server, path, head, status):
    before = len(served(server))
    answer = raw_exchange(server, head % path.encode())
    assert status_of(answer) == status
    assert len(served(server)) == before


# -- accepted framings -------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "lengths",
    [b"Content-Length: 5\r\nContent-Length: 5\r\n", b"Content-Length: 5, 5\r\n"],
    ids=["repeated", "listed"],
)
def test_identical_content_lengths_count_as_one(server, path, lengths):
    """RFC 9112 6.3 item 5: the same value several times is that value."""
    answer = raw_exchange(
        server,
        b"POST %s HTTP/1.1\r\nHost: h\r\n%sConnection: close\r\n\r\nhello"
        % (path.encode(), lengths),
    )
    assert status_of(answer) == 200
    assert body_of(answer) == {"path": path, "body": "hello"}


@pytest.mark.parametrize("path", PATHS)
def test_http_1_0_needs_no_host(server, path):
    answer = raw_exchange(server, b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
    assert status_of(answer) == 200


@pytest.mark.parametrize("path", PATHS)
def test_chunked_with_extensions_trailers_and_any_case_is_read(server, path):
    answer = raw_exchange(
        server,
        b"POST %s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n"
        b'5;name=value;quoted="a \\" b"\r\nhello\r\n1 ; bare\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n'
        % path.encode(),
    )
    assert status_of(answer) == 200
    assert body_of(answer) == {"path": path, "body": "hello!"}


def test_an_empty_line_before_a_request_line_is_ignored(server):
    """RFC 9112 2.2: some clients send CRLF after a body; a few such lines are skipped."""
    answer = raw_exchange(
        server,
        b"POST /fast/ HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok\r\n"
        b"\r\nGET /fast/next/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert b'"path": "/fast/next/"' in answer


# -- smuggling payloads ---------------------------------------------------------------


def smuggled_request(path: bytes) -> bytes:
    return b"GET /smuggled/ HTTP/1.1\r\nHost: h\r\nX-Path: %s\r\n\r\n" % path


@pytest.mark.parametrize("path", PATHS)
def test_cl_cl_payload_gets_400_and_no_second_request(server, path):
    hidden = smuggled_request(path.encode())
    answer = raw_exchange(
        server,
        b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), len(hidden), hidden),
    )
    assert status_of(answer) == 400
    assert answer.count(b"HTTP/1.1 ") == 1
    assert "/smuggled/" not in served(server)


@pytest.mark.parametrize("path", PATHS)
def test_te_cl_payload_is_read_as_chunked_and_the_connection_closes(server, path):
    """A front that believes Content-Length (4 bytes) would see the chunk's data as a
    second request; this server reads the chunked body and closes the connection after
    the response, so nothing is parsed after it."""
    hidden = smuggled_request(path.encode())
    chunk = b"%x\r\n%s\r\n" % (len(hidden), hidden)
    answer = raw_exchange(
        server,
        b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n%s0\r\n\r\n%s" % (path.encode(), chunk, hidden),
    )
    assert status_of(answer) == 200
    assert b"Connection: close" in answer
    assert answer.count(b"HTTP/1.1 ") == 1
    assert body_of(answer) == {"path": path, "body": hidden.decode()}
    assert "/smuggled/" not in served(server)


@pytest.mark.parametrize("path", PATHS)
def test_cl_te_payload_is_read_as_chunked_and_the_connection_closes(server, path):
    """A front that believes Content-Length would pass the bytes after the empty chunk as
    part of the body; this server ends the body at the last chunk and closes."""
    hidden = smuggled_request(path.encode())
    body = b"0\r\n\r\n" + hidden
    answer = raw_exchange(
        server,
        b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n%s" % (path.encode(), len(body), body),
    )
    assert status_of(answer) == 200
    assert answer.count(b"HTTP/1.1 ") == 1
    assert body_of(answer) == {"path": path, "body": ""}
    assert "/smuggled/" not in served(server)


# -- chunked bodies ------------------------------------------------------------------------

BAD_CHUNKS = {
    "size with a plus sign": b"+5\r\nhello\r\n0\r\n\r\n",
    "size in 0x form": b"0x5\r\nhello\r\n0\r\n\r\n",
    "negative size": b"-5\r\nhello\r\n0\r\n\r\n",
    "empty size": b"\r\nhello\r\n0\r\n\r\n",
    "space after the size": b"5 \r\nhello\r\n0\r\n\r\n",
    "seventeen hex digits": b"0" * 16 + b"5\r\nhello\r\n0\r\n\r\n",
    "bare LF after the size": b"5\nhello\r\n0\r\n\r\n",
    "data longer than its size": b"5\r\nhelloXX\r\n0\r\n\r\n",
    "extension with a control character": b"5;a\x01\r\nhello\r\n0\r\n\r\n",
    "extension line over the limit": b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
    "unterminated quoted extension": b'5;a="x\r\nhello\r\n0\r\n\r\n',
    "trailer without a colon": b"5\r\nhello\r\n0\r\nno colon\r\n\r\n",
    "trailer obs-folded": b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",
    "too many trailer lines": b"5\r\nhello\r\n0\r\n" + b"X-T: 1\r\n" * 200 + b"\r\n",
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(BAD_CHUNKS))
def test_malformed_chunked_bodies_get_400_and_close(server, path, case):
    routed = len(server.routed)
    answer = raw_exchange(
        server,
        b"POST %s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n%s%s"
        % (path.encode(), BAD_CHUNKS[case], smuggled_request(path.encode())),
    )
    assert status_of(answer) == 400
    assert answer.count(b"HTTP/1.1 ") == 1
    assert "/smuggled/" not in served(server)
    assert len(server.routed) == routed  # a routed request's body is read before it is sent
