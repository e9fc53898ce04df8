"""HTTP/1.1 request framing as RFC 9112 defines it, without I/O: the request head, and the
lines of a chunked body.

A front proxy and this server must never disagree on where a request ends, or a second
request can hide in the first one's body (request smuggling). So the grammar is applied
strictly and anything a proxy could read another way is refused:

- request line ``METHOD SP target SP HTTP/1.x`` with single spaces; HTTP/1.0 and 1.1
  (1.2 and up are served as 1.1, another major version gets 505);
- field names are tokens, with no space before the colon; values hold no control
  characters but tab; lines end with CRLF (a bare CR or LF is refused); a line folded
  onto the next (obs-fold) is refused;
- HTTP/1.1 needs exactly one ``Host`` (HTTP/1.0 at most one), made of the characters of
  a URI authority;
- ``Content-Length`` is ASCII digits only; several values (repeated lines or a list) are
  accepted only when they are all the same number (RFC 9112 6.3, item 5), else 400;
- ``Transfer-Encoding`` whose final coding is ``chunked`` (once, no parameters) frames the
  body and overrides a ``Content-Length``; the connection is then closed after the
  response (RFC 9112 6.1). A final coding other than ``chunked`` makes the length
  unknowable: 400. ``chunked`` after a coding this server cannot decode (``gzip,
  chunked``): 501. Any ``Transfer-Encoding`` in an HTTP/1.0 request: 400.

Everything refused raises :class:`HeadError` with the status to answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

#: The longest request line (method, target, version): longer ones get 414.
MAX_REQUEST_LINE = 8192
#: Field lines in a head, and trailer lines after a chunked body.
MAX_HEADERS = 100
#: The longest chunk-size line, extensions included.
MAX_CHUNK_LINE = 4096

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(r"(" + _TOKEN + r") ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
_NAME = re.compile(_TOKEN)
#: The bytes a head's lines may hold: no control character but tab (CR and LF only end
#: lines).
_FIELD_BYTES = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"
_HEAD_BYTES = _FIELD_BYTES + b"\r\n"
_VERSIONS = {"HTTP/1.1": "HTTP/1.1", "HTTP/1.0": "HTTP/1.0"}
#: Methods, and Host values, already found valid (a few, kept to skip a regex).
_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}
_HOSTS: set[str] = set()
_HOST = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:\[\]%]*")
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_EXTENSION = (
    rb"[ \t]*;[ \t]*" + _TOKEN.encode() + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN.encode() + rb"|"
    rb"" + _QUOTED + rb"))?"
)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:" + _CHUNK_EXTENSION + rb")*\r\n")
_FRAMING = frozenset(("host", "content-length", "transfer-encoding"))
#: Header name as sent -> its lower case, for names already found to be tokens.
_NAMES: dict[str, str] = {}


class HeadError(ValueError):
    """A request this server refuses; ``status`` is the answer (400, 414, 431, 501, 505)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestHeaders:
    """The request's headers as sent (names as spelled, duplicates in order). Lookups
    ignore case and give the first value, like the ``email.message.Message`` pywsgi
    builds, which costs several times as much to parse and to query."""

    __slots__ = ("_items", "_first", "status")

    def __init__(
        self, items: list[tuple[str, str]] | None = None, first: dict[str, str] | None = None
    ):
        self._items = items if items is not None else []
        if first is None:
            first = {}
            for name, value in self._items:
                first.setdefault(name.lower(), value)
        self._first = first
        self.status = ""

    def get(self, name: str, default: Any = None) -> Any:
        return self._first.get(name.lower(), default)

    getheader = get

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __delitem__(self, name: str) -> None:
        lower = name.lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != lower]
        self._first.pop(lower, None)

    def get_all(self, name: str, failobj: Any = None) -> Any:
        lower = name.lower()
        return [v for n, v in self._items if n.lower() == lower] or failobj

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def keys(self) -> list[str]:
        return [n for n, _ in self._items]

    def values(self) -> list[str]:
        return [v for _, v in self._items]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    @property
    def typeheader(self) -> str | None:
        return self._first.get("content-type")

    @property
    def headers(self) -> list[str]:
        return [f"{n}: {v}\r\n" for n, v in self._items]


class Head:
    """A parsed request head and how its body is framed."""

    __slots__ = ("method", "target", "version", "headers", "content_length", "chunked", "close")

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: RequestHeaders,
        content_length: int | None,
        chunked: bool,
        close: bool,
    ):
        self.method = method
        self.target = target
        #: ``"HTTP/1.1"`` or ``"HTTP/1.0"``.
        self.version = version
        self.headers = headers
        #: The body's length; None without Content-Length (and when chunked).
        self.content_length = content_length
        self.chunked = chunked
        #: The connection must close after the response.
        self.close = close


def parse_head(data: bytes) -> Head:
    """The head ``data`` (request line, field lines, the empty line, all ending in CRLF)."""
    if data.translate(None, _HEAD_BYTES):
        raise HeadError(400, "a control character in the request head")
    lines = data.decode("latin-1").split("\r\n")
    line_ends = len(lines) - 1
    if data.count(b"\r") != line_ends or data.count(b"\n") != line_ends:
        raise HeadError(400, "a bare CR or LF in the request head")
    if len(lines) < 3 or lines[-1] or lines[-2]:
        raise HeadError(400, "the request head does not end with an empty line")
    if len(lines) > MAX_HEADERS + 3:
        raise HeadError(431, f"more than {MAX_HEADERS} request headers")
    del lines[-2:]
    fields = iter(lines)
    method, target, version = _request_line(next(fields))

    items: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    repeated: list[str] | None = None
    names = _NAMES
    for line in fields:
        name, colon, value = line.partition(":")
        lower = names.get(name)
        if lower is None:
            lower = _checked_name(name, colon, line)
        value = value.strip(" \t")
        items.append((name, value))
        if lower not in first:
            first[lower] = value
        elif lower in _FRAMING:
            repeated = (repeated or []) + [lower]
    headers = RequestHeaders(items, first)
    if repeated is None and "content-length" not in first and "transfer-encoding" not in first:
        content_length, chunked, close = None, False, False
        host = first.get("host")
        if host is None:
            if version == "HTTP/1.1":
                raise HeadError(400, "an HTTP/1.1 request without a Host header")
        elif host not in _HOSTS:
            _check_host(host)
    else:
        content_length, chunked, close = _framing(version, first, headers, repeated)
    connection = first.get("connection")
    if connection is not None:
        tokens = _connection_tokens(connection)
        if version == "HTTP/1.1":
            close = close or "close" in tokens
        else:
            close = close or "keep-alive" not in tokens
    elif version == "HTTP/1.0":
        close = True
    return Head(method, target, version, headers, content_length, chunked, close)


def _request_line(line: str) -> tuple[str, str, str]:
    """(method, target, version) of ``METHOD SP target SP HTTP/1.x``."""
    if len(line) > MAX_REQUEST_LINE:
        raise HeadError(414, f"the request line is longer than {MAX_REQUEST_LINE} bytes")
    parts = line.split(" ")
    if len(parts) == 3:
        method, target, version = parts
        known = _VERSIONS.get(version)
        if known is not None and method in _METHODS and target and "\t" not in target:
            return method, target, known
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise HeadError(400, f"malformed request line {line[:200]!r}")
    method, target, major, minor = match.groups()
    if major != "1":
        raise HeadError(505, f"HTTP version {major}.{minor} is not supported")
    if len(_METHODS) < 64:
        _METHODS.add(method)
    return method, target, "HTTP/1.0" if minor == "0" else "HTTP/1.1"


def _check_host(host: str) -> None:
    if _HOST.fullmatch(host) is None:
        raise HeadError(400, f"invalid Host header {host[:200]!r}")
    if len(_HOSTS) < 256:
        _HOSTS.add(host)


def _checked_name(name: str, colon: str, line: str) -> str:
    if not colon:
        if line[:1] in (" ", "\t"):
            raise HeadError(400, "a header line folded onto the next (obs-fold)")
        raise HeadError(400, f"a header line without a colon {line[:200]!r}")
    if _NAME.fullmatch(name) is None:
        if name[:1] in (" ", "\t"):
            raise HeadError(400, "a header line folded onto the next (obs-fold)")
        raise HeadError(400, f"malformed header name {name[:200]!r}")
    lower = name.lower()
    if len(_NAMES) < 1024:
        _NAMES[name] = lower
    return lower


def _connection_tokens(value: str) -> set[str] | tuple[str]:
    value = value.lower()
    if "," not in value:
        return (value.strip(" \t"),)
    return {token.strip(" \t") for token in value.split(",")}


def _framing(
    version: str, first: dict[str, str], headers: RequestHeaders, repeated: list[str] | None
) -> tuple[int | None, bool, bool]:
    """(content length, chunked, close) from Host, Content-Length and Transfer-Encoding."""
    if "host" in first:
        if repeated and "host" in repeated:
            raise HeadError(400, "more than one Host header")
        _check_host(first["host"])
    elif version == "HTTP/1.1":
        raise HeadError(400, "an HTTP/1.1 request without a Host header")

    length = None
    declared = first.get("content-length")
    if declared is not None:
        if repeated and "content-length" in repeated:
            declared = ",".join(headers.get_all("content-length"))
        length = content_length(declared)

    encoding = first.get("transfer-encoding")
    if encoding is None:
        return length, False, False
    if version == "HTTP/1.0":
        raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")
    if repeated and "transfer-encoding" in repeated:
        encoding = ",".join(headers.get_all("transfer-encoding"))
    codings = [coding.strip(" \t").lower() for coding in encoding.split(",")]
    if codings[-1] != "chunked" or "" in codings:
        raise HeadError(400, f"Transfer-Encoding {encoding[:200]!r} does not end with chunked")
    if len(codings) > 1:
        if "chunked" in codings[:-1]:
            raise HeadError(400, "chunked applied more than once")
        raise HeadError(501, f"Transfer-Encoding {encoding[:200]!r} is not supported")
    # Content-Length is overridden; a request carrying both is suspect: close after it.
    return None, True, length is not None


def content_length(declared: str) -> int:
    """The value of Content-Length (one or more lines joined with commas)."""
    values = {value.strip(" \t") for value in declared.split(",")}
    numbers = set()
    for value in values:
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise HeadError(400, f"invalid Content-Length {declared[:200]!r}")
        numbers.add(int(value))
    if len(numbers) != 1:
        raise HeadError(400, f"conflicting Content-Length values {declared[:200]!r}")
    return numbers.pop()


# -- chunked bodies (RFC 9112 section 7.1) -----------------------------------------------


def chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (hex digits, then extensions, which are checked and
    ignored, then CRLF)."""
    if len(line) > MAX_CHUNK_LINE:
        raise HeadError(400, f"a chunk-size line longer than {MAX_CHUNK_LINE} bytes")
    match = _CHUNK_LINE.fullmatch(line)
    if match is None:
        raise HeadError(400, f"malformed chunk-size line {line[:100]!r}")
    return int(match.group(1), 16)


def check_trailer_line(line: bytes) -> None:
    """A field line of the trailer section (its field is dropped: WSGI has no trailers)."""
    if not line.endswith(b"\r\n"):
        raise HeadError(400, "a trailer line without CRLF")
    if line[:-2].translate(None, _FIELD_BYTES):
        raise HeadError(400, "a control character in a trailer line")
    text = line[:-2].decode("latin-1")
    name, colon, _ = text.partition(":")
    _checked_name(name, colon, text)
