"""The request body as ``wsgi.input``: pywsgi's reader, with every wait for the client
bounded, and chunked bodies read by the strict rules of http11.py (hex sizes only,
bounded extension and trailer lines, CRLF where RFC 9112 puts it) instead of pywsgi's
lenient byte-by-byte parser.

Each read of the socket may wait ``HTTP_BODY_TIMEOUT`` for the client (the deadline is
deadlines.py's, no timer per read), and once a body has kept the server waiting that long
in all it must average ``HTTP_BODY_MIN_RATE`` bytes per second of waiting: a client that
stops, or sends a byte now and then, cannot hold a connection and its greenlet for good.
Only time spent waiting for the client counts, not time the application spends between
its reads.

A body that cannot be read to its end raises :class:`BodyError`: it breaks the chunked
rules or the connection ends before it does (400), or its client is too slow (408). It is
a BaseException so that neither Django (which turns an OSError from the read into
UnreadablePostError, a 500 and a logged traceback) nor an application's ``except
Exception`` takes it for an error of its own: it reaches the handler, which answers with
its status if no response has started and closes the connection, where the next request
would start being unknown.
"""

from __future__ import annotations

import time
from typing import Any

from gevent import pywsgi

from .deadlines import Deadlines
from .http11 import MAX_CHUNK_LINE, MAX_HEADERS, HeadError, check_trailer_line, chunk_size

#: The most one read of the socket asks for.
READ_SIZE = 262144


class BodyError(BaseException):
    """The request body cannot be read to its end; ``status`` is the answer."""

    status = 400

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BodyTimeout(BodyError):
    """The client kept a body read waiting past its deadline."""

    status = 408

    def __init__(self, reason: str = "the request body did not arrive in time"):
        super().__init__(reason)


class BodyWaits(Deadlines):
    """The body reads of one process blocked on their clients, and the limits they keep."""

    def __init__(self, timeout: float, min_rate: int):
        super().__init__(timeout, BodyTimeout)
        self.timeout = timeout
        self.min_rate = min_rate


class RequestBody(pywsgi.Input):
    """``wsgi.input`` of one request (pywsgi's constructor, plus: ``owner``, the
    connection whose greenlet reads, and ``waits``, the process's :class:`BodyWaits`;
    without them reads have no deadline). ``trailer_limit`` bounds the bytes of a chunked
    body's trailer section, as HTTP_MAX_HEAD_SIZE bounds the head."""

    # pywsgi's: the current chunk's size (-1 before the first, 0 after the last) and the
    # bytes of it (or of the body) read so far.
    chunk_length: int
    position: int
    #: Bytes read off the connection, and seconds spent waiting for them.
    received = 0
    waited = 0.0
    #: Why the body could not be read to its end, once it could not.
    failure: BodyError | None = None

    def __init__(
        self,
        rfile: Any,
        content_length: int | None,
        socket: Any = None,
        chunked: bool = False,
        owner: Any = None,
        waits: BodyWaits | None = None,
        trailer_limit: int = 65536,
    ):
        super().__init__(rfile, content_length, socket, chunked)
        self.owner = owner
        self.waits = waits
        self.trailer_limit = trailer_limit

    def _fail(self, reason: str, kind: type[BodyError] = BodyError) -> BodyError:
        self._chunked_input_error = True  # pywsgi's _discard then reads no further
        self.chunk_length = 0
        self.failure = kind(reason)
        return self.failure

    def _discard(self) -> None:
        """Read what the application left of the body, so that the next request can be
        read; a failure stays in ``failure`` for the handler, which closes instead."""
        if self.failure is None:
            try:
                super()._discard()
            except BodyError:
                pass

    # -- reading the socket, under the deadline ------------------------------------------

    def _receive(self, size: int, line: bool = False) -> bytes:
        """Up to ``size`` bytes (with ``line``, up to and including the first LF), fewer
        only where the connection ends; each read of the socket within the body's limits."""
        rfile = self.rfile
        waits = self.waits
        parts = []
        while size > 0:
            if waits is not None:
                allowed = waits.timeout
                if waits.min_rate:
                    allowed = min(allowed, allowed + self.received / waits.min_rate - self.waited)
                start = time.monotonic()
                waits.wait(self.owner, start + allowed)
            try:
                if line:  # peek and read1 read the socket once at most
                    buffered = rfile.peek(1)
                    end = buffered.find(b"\n", 0, size)
                    data = rfile.read(end + 1 if end >= 0 else min(len(buffered), size))
                else:
                    data = rfile.read1(min(size, READ_SIZE))
            except BodyTimeout:
                raise self._too_slow(allowed) from None
            finally:
                if waits is not None:
                    waits.done(self.owner)
                    self.waited += time.monotonic() - start
            if not data:
                break
            parts.append(data)
            size -= len(data)
            self.received += len(data)
            if line and end >= 0:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _too_slow(self, allowed: float) -> BodyError:
        waits = self.waits
        assert waits is not None
        if allowed < waits.timeout:
            reason = (
                f"slower than HTTP_BODY_MIN_RATE ({waits.min_rate} bytes/s): "
                f"{self.received} bytes in {self.waited + allowed:.1f} s of waiting"
            )
        else:
            reason = f"no body bytes for {allowed:g} s ({self.received} received)"
        return self._fail(reason, BodyTimeout)

    # -- pywsgi's readers -----------------------------------------------------------------

    def _do_read(self, length: int | None = None, use_readline: bool = False) -> bytes:
        if self.failure is not None:
            raise self.failure
        content_length = self.content_length
        if content_length is None:
            return b""
        self._send_100_continue()
        left = content_length - self.position
        if length is None or length > left:
            length = left
        if length <= 0:
            return b""
        data = self._receive(length, use_readline)
        self.position += len(data)
        if len(data) < length and not (use_readline and data[-1:] == b"\n"):
            raise self._fail(
                f"the connection ended {self.position} bytes into a {content_length}-byte body"
            )
        return data

    def _chunked_read(self, length: int | None = None, use_readline: bool = False) -> bytes:
        if self.failure is not None:
            raise self.failure
        self._send_100_continue()
        if length == 0:
            return b""
        parts = []
        while self.chunk_length != 0:
            left = self.chunk_length - self.position
            if length is not None and length < left:
                left = length
            if left <= 0:
                self.chunk_length = self._next_chunk_size()
                self.position = 0
                continue
            data = self._receive(left, use_readline)
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
        line = self._receive(MAX_CHUNK_LINE + 1, line=True)
        try:
            size = chunk_size(line)
        except HeadError as error:
            raise self._fail(error.reason) from None
        if size == 0:
            self._read_trailer()
        return size

    def _end_of_chunk(self) -> None:
        if self._receive(2) != b"\r\n":
            raise self._fail("chunk data not followed by CRLF")

    def _read_trailer(self) -> None:
        """Read the trailer section up to its empty line, checking each field line."""
        total = 0
        for _ in range(MAX_HEADERS + 1):
            line = self._receive(self.trailer_limit - total + 1, line=True)
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
