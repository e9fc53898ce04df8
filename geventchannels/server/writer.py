"""The single writer of a WebSocket's socket: the only code that writes frames to it.

Replies are framed by the engine in whichever greenlet delivered them and queued in
``engine.writes``; the frames queued during one turn of the event loop leave together in
one non-blocking ``send`` on the OS socket at the end of that turn. Only when the kernel
buffer is full (or on TLS, whose records must go through the TLS layer) does a writer
greenlet start; it drains everything queued meanwhile with ``sendall`` and exits.

While a writer runs, what waits for its client is counted, and the client is dropped
(consumers see 1008) when more than ``WEBSOCKET_OUTBOUND_QUEUE`` frames or
``WEBSOCKET_OUTBOUND_BYTES`` bytes wait for it; when the slow clients of the process hold
more than ``WEBSOCKET_OUTBOUND_TOTAL`` together, those holding the most are dropped. After
drops that free a lot, glibc is asked to return the freed memory to the system.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent import get_hub

from ..logs import Tally

if TYPE_CHECKING:
    from .app import ChannelsApplication
    from .frames import FrameEngine

logger = logging.getLogger("geventchannels.server.websocket")

#: Frames, or bytes, a batch may collect before it is written without waiting for the
#: loop's turn (then the bounds below apply to what the socket cannot take).
BATCH_FRAMES = 64
BATCH_BYTES = 256 * 1024
#: Bytes dropped before freed memory is handed back to the system (malloc_trim).
TRIM_AFTER = 16 * 1024 * 1024
#: Seconds between two malloc_trim calls at most (each walks the whole heap).
TRIM_INTERVAL = 1.0

_dropped = Tally(
    "%d slow WebSocket client(s) dropped (consumers see 1008): %s (latest: %s). Raise the "
    "limit or send less to clients that do not keep up.",
    logger,
)


class FrameWriter:
    """The writing half of :class:`~geventchannels.server.websocket.WebSocketConnection`."""

    __slots__ = (
        "sock",
        "raw",
        "writer",
        "pending",
        "pending_eof",
        "flush_scheduled",
        "close_code",
        "held",
        "waiting",
        "counted",
        "batched",
    )

    # Set by the connection.
    app: ChannelsApplication
    engine: FrameEngine
    reply_channel: str

    def __init__(self, sock: Any, raw: socket.socket | None):
        self.sock = sock
        #: The OS socket for non-blocking sends; None on TLS (see sockets.os_socket).
        self.raw = raw
        self.writer: gevent.Greenlet | None = None
        self.pending = b""
        self.pending_eof = False
        self.flush_scheduled = False
        #: The close code consumers are told (set when the server closes or drops).
        self.close_code: int | None = None
        #: While the writer runs: bytes counted in BACKLOG for this client, the bytes of
        #: the first ``counted`` frames of ``engine.writes`` (the rest not counted yet).
        self.held = 0
        self.waiting = 0
        self.counted = 0
        #: Bytes queued in this turn of the event loop, before its flush.
        self.batched = 0

    def _flush_soon(self) -> None:
        """Write replies at the end of this turn of the event loop, so that replies
        sent by several consumers in the same turn leave in one system call."""
        if self.writer is not None:
            self._check_backlog()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.batched = 0
            get_hub().loop.run_callback(self._scheduled_flush)
        else:
            writes = self.engine.writes
            self.batched += len(writes[-1])  # what deliver() just queued
            if len(writes) >= BATCH_FRAMES or self.batched >= BATCH_BYTES:
                self._flush()

    def _scheduled_flush(self) -> None:
        self.flush_scheduled = False
        if self.engine.writes:
            self._flush()

    def _flush(self) -> None:
        """Write what the engine has queued: straight to the socket when it can take it
        all, else hand the rest to the writer greenlet."""
        engine = self.engine
        if self.writer is not None:
            self._check_backlog()
            return
        data, eof = engine.take_output()
        if data:
            raw = self.raw
            if raw is not None:
                try:
                    sent = raw.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self.abort()
                    return
                if sent == len(data):
                    if eof:
                        self.abort()
                    return
                data = data[sent:]
            self.pending = data
            self.pending_eof = eof
            self.waiting = self.counted = 0
            self.writer = gevent.spawn(self._write_loop)
            BACKLOG.writers[self] = None
            self._check_backlog()
        elif eof:
            self.abort()

    def _write_loop(self) -> None:
        sendall = self.sock.sendall
        take_output = self.engine.take_output
        try:
            while True:
                data, eof = self.pending, self.pending_eof
                if data:
                    sendall(data)
                if eof:
                    self.abort()
                    return
                data, eof = take_output()
                self.pending, self.pending_eof = data, eof
                self.waiting = self.counted = 0
                if not data and not eof:
                    return
                self._count()
        except (OSError, ValueError):  # ValueError: a TLS socket aborted meanwhile
            self.abort()
        finally:
            self.writer = None
            self.pending = b""
            self._release()

    def _count(self) -> int:
        """Bring this client's share of BACKLOG up to date; its bytes waiting."""
        writes = self.engine.writes
        counted = self.counted
        if len(writes) > counted:
            self.waiting += sum(len(frame) for frame in writes[counted:])
            self.counted = len(writes)
        held = self.waiting + len(self.pending)
        BACKLOG.total += held - self.held
        self.held = held
        return held

    def _release(self) -> None:
        BACKLOG.total -= self.held
        self.held = 0
        BACKLOG.writers.pop(self, None)

    def _check_backlog(self) -> None:
        """Drop this slow client when too much waits for it, or the slowest clients when
        all of them together hold too much."""
        config = self.app.config
        held = self._count()
        if held > config.websocket_outbound_bytes:
            self._overflow(f"{held} bytes waited for one (WEBSOCKET_OUTBOUND_BYTES)")
        elif len(self.engine.writes) > config.websocket_outbound_queue:
            self._overflow(
                f"more than {config.websocket_outbound_queue} messages waited for one "
                "(WEBSOCKET_OUTBOUND_QUEUE)"
            )
        elif BACKLOG.total > config.websocket_outbound_total:
            BACKLOG.shed(config.websocket_outbound_total)

    def _overflow(self, reason: str) -> None:
        """Drop the connection: what waits for it cannot be sent (the socket is full and
        may hold half a frame), so no close frame either."""
        _dropped.add(reason, self.reply_channel)
        self.close_code = 1008
        freed = self.held
        self.engine.writes = []
        self.pending = b""
        self.waiting = self.counted = 0
        self._release()
        writer = self.writer
        if writer is not None:
            writer.kill(block=False)
        self.abort()
        BACKLOG.freed(freed)

    def abort(self) -> None:
        """End the TCP connection now, without a closing handshake; the reader wakes up
        with EOF. Also how the engine's end of stream is carried out: after a close
        handshake or a failure the server closes first (RFC 6455 7.1.1)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_plain(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (another C library)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


class Backlog:
    """What the process's slow clients hold: their writers and the bytes waiting for them
    (``total``). One per process, whatever the number of servers in it."""

    def __init__(self) -> None:
        self.writers: dict[FrameWriter, None] = {}
        self.total = 0
        self._unreturned = 0
        self._trim_at = 0.0
        self._trim: gevent.Greenlet | None = None
        self._malloc_trim = _find_malloc_trim()

    def shed(self, limit: int) -> None:
        """Drop the clients holding the most until the total is within ``limit``."""
        total = self.total
        for writer in sorted(self.writers, key=lambda w: w.held, reverse=True):
            if self.total <= limit:
                break
            writer._overflow(
                f"the slow clients of the process held {total} bytes "
                f"(WEBSOCKET_OUTBOUND_TOTAL), this one {writer.held}"
            )

    def freed(self, size: int) -> None:
        """``size`` bytes were dropped: once many were, hand the memory back to the
        system soon (glibc keeps freed memory for reuse, so the process would stay as
        large as it was at its peak)."""
        self._unreturned += size
        if self._malloc_trim is None or self._trim is not None or self._unreturned < TRIM_AFTER:
            return
        delay = max(0.05, self._trim_at + TRIM_INTERVAL - time.monotonic())
        self._trim = gevent.spawn_later(delay, self._return_memory)

    def _return_memory(self) -> None:
        # The dropped writers have died by now, and the frames they held with them.
        self._trim = None
        self._unreturned = 0
        self._trim_at = time.monotonic()
        if self._malloc_trim is not None:
            self._malloc_trim(0)


#: The process's slow clients.
BACKLOG = Backlog()
