"""The request body as ``wsgi.input``: pywsgi's reader, with chunked bodies read by the
strict rules of http11.py (hex sizes only, bounded extension and trailer lines, CRLF where
RFC 9112 puts it) instead of pywsgi's lenient byte-by-byte parser.

A body that breaks the rules raises pywsgi's ``_InvalidClientInput``: pywsgi then answers
400 if the response has not started, and closes the connection either way, because where
the next request would start is unknown.
"""

from __future__ import annotations

from gevent import pywsgi

from .http11 import MAX_CHUNK_LINE, MAX_HEADERS, HeadError, check_trailer_line, chunk_size


class BadBody(pywsgi._InvalidClientInput):
    """A chunked body that does not follow RFC 9112."""


class RequestBody(pywsgi.Input):
    """``wsgi.input`` of one request (pywsgi's constructor). ``trailer_limit`` bounds the
    bytes of a chunked body's trailer section, as HTTP_MAX_HEAD_SIZE bounds the head."""

    trailer_limit = 65536

    # pywsgi's: the current chunk's size (-1 before the first, 0 after the last) and the
    # bytes of it read so far.
    chunk_length: int
    position: int

    def _fail(self, reason: str) -> BadBody:
        self._chunked_input_error = True
        self.chunk_length = 0
        return BadBody(reason)

    def _chunked_read(self, length: int | None = None, use_readline: bool = False) -> bytes:
        self._send_100_continue()
        if length == 0:
            return b""
        reader = self.rfile.readline if use_readline else self.rfile.read
        parts = []
        while self.chunk_length != 0:
            left = self.chunk_length - self.position
            if length is not None and length < left:
                left = length
            if left <= 0:
                self.chunk_length = self._next_chunk_size()
                self.position = 0
                continue
            data = reader(left)
            if not data:
                raise self._fail("the connection ended inside a chunk")
            parts.append(data)
            self.position += len(data)
            if self.position == self.chunk_length:
                self._end_of_chunk()
            if length is not None:
                length -= len(data)
                if length == 0:
                    break
            if use_readline and data[-1:] == b"\n":
                break
        return b"".join(parts)

    def _next_chunk_size(self) -> int:
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        try:
            size = chunk_size(line)
        except HeadError as error:
            raise self._fail(error.reason) from None
        if size == 0:
            self._read_trailer()
        return size

    def _end_of_chunk(self) -> None:
        if self.rfile.read(2) != b"\r\n":
            raise self._fail("chunk data not followed by CRLF")

    def _read_trailer(self) -> None:
        """Read the trailer section up to its empty line, checking each field line."""
        total = 0
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(self.trailer_limit - total + 1)
            total += len(line)
            if line == b"\r\n":
                return
            if total > self.trailer_limit:
                break
            try:
                check_trailer_line(line)
            except HeadError as error:
                raise self._fail(error.reason) from None
        raise self._fail("the trailer section is too large")
