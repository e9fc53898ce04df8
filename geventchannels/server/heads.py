"""Reading request heads off a connection: within a deadline, within a size limit, and
giving up the slot to a newcomer when the process is full.

A connection waits for a head before its first request (up to ``HTTP_HEAD_TIMEOUT`` from
the accept) and between keep-alive requests (up to ``HTTP_KEEPALIVE_TIMEOUT`` for the
first byte, then ``HTTP_HEAD_TIMEOUT`` for the rest of the head). The deadlines are kept
by deadlines.py's sweeper (no timer per connection): a connection past its deadline gets
:class:`HeadTimeout` thrown into the read it is blocked in.

When a new connection finds every slot taken (MAX_CONNECTIONS), the connection that has
waited longest for a head gives its slot up the same way: clients that send nothing, or a
head a byte at a time (slowloris), cannot keep others out. A request in progress or an
open WebSocket is never interrupted.

The head is at most ``HTTP_MAX_HEAD_SIZE`` bytes (request line, fields and the empty
line), so an unfinished head holds no more memory than that.
"""

from __future__ import annotations

import time
from typing import Any

from .deadlines import Deadlines
from .http11 import MAX_REQUEST_LINE, HeadError

#: Empty lines tolerated before a request line (RFC 9112 2.2: some clients send a CRLF
#: after a body).
_LEADING_EMPTY_LINES = 4


class HeadTimeout(BaseException):
    """Thrown into a connection waiting for its request head: its deadline passed, or its
    slot went to a new connection. A BaseException, so no ``except Exception`` between
    the read and the handler swallows it."""


def read_head(rfile: Any, limit: int, buffered: bytes) -> bytes | None:
    """The next request head from ``rfile`` (a buffered reader whose buffer starts with
    ``buffered``, not empty), ending with its empty line; None if the client closed the
    connection first. Raises HeadError: 414 or 431 over the limits, 400 for a bare LF."""
    end = buffered.find(b"\r\n\r\n")
    if 0 < end <= limit - 4 and buffered[:2] != b"\r\n":
        return rfile.read(end + 4)  # the whole head is in the buffer: no system call
    readline = rfile.readline
    lines: list[bytes] = []
    size = 0
    empty_lines = 0
    while True:
        room = limit - size
        if not lines and room > MAX_REQUEST_LINE + 2:
            room = MAX_REQUEST_LINE + 2
        line = readline(room + 1)
        if len(line) > room:
            if not lines and room < limit - size:
                raise HeadError(414, f"the request line is longer than {MAX_REQUEST_LINE} bytes")
            raise HeadError(431, f"the request head is larger than {limit} bytes")
        size += len(line)
        if line[-2:] != b"\r\n":
            if line[-1:] == b"\n":
                raise HeadError(400, "a request head line ending in a bare LF")
            return None  # the connection ended inside the head
        if line == b"\r\n":
            if lines:
                lines.append(line)
                return b"".join(lines)
            empty_lines += 1
            if empty_lines > _LEADING_EMPTY_LINES:
                raise HeadError(400, "empty lines instead of a request line")
            continue
        lines.append(line)


class WaitingHeads(Deadlines):
    """The connections of one process blocked reading a request head (each says whether
    ``head_started``): their deadlines, and the slot a newcomer takes at MAX_CONNECTIONS."""

    def __init__(self, shortest_timeout: float):
        super().__init__(shortest_timeout, HeadTimeout)
        #: Connections interrupted to free a slot.
        self.evicted = 0

    def hurry_idle(self, deadline: float) -> None:
        """Bring the deadline of every connection that has sent nothing of its next head
        forward to ``deadline`` (a stop that does not wait for idle keep-alive clients)."""
        now = time.monotonic()
        for connection in list(self.deadlines):
            if connection.head_started:
                continue
            if deadline <= now:
                if connection not in self._doomed:
                    self._interrupt_soon(connection)
            elif deadline < self.deadlines[connection]:
                self.deadlines[connection] = deadline

    def evict_oldest(self) -> bool:
        """Take the slot of the connection that has waited longest for a head; False when
        none is waiting (every slot holds a request or a WebSocket)."""
        for connection in self.deadlines:
            if connection not in self._doomed:
                self.evicted += 1
                self._interrupt_soon(connection)
                return True
        return False
