"""The single writer of a WebSocket's socket: the only code that writes frames to it.

Replies are framed by the engine in whichever greenlet delivered them and queued in
``engine.writes``; the frames queued during one turn of the event loop leave together in
one non-blocking ``send`` on the OS socket at the end of that turn. Only when the kernel
buffer is full (or on TLS, whose records must go through the TLS layer) does a writer
greenlet start; it drains everything queued meanwhile with ``sendall`` and exits. More
than ``WEBSOCKET_OUTBOUND_QUEUE`` frames waiting for it drop the connection (1008).
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import gevent
from gevent import get_hub

if TYPE_CHECKING:
    from .app import ChannelsApplication
    from .frames import FrameEngine

logger = logging.getLogger("geventchannels.server.websocket")

#: Frames a batch may collect before it is written without waiting for the loop's turn.
BATCH_FRAMES = 64


class FrameWriter:
    """The writing half of :class:`~geventchannels.server.websocket.WebSocketConnection`."""

    __slots__ = ("sock", "raw", "writer", "pending", "pending_eof", "flush_scheduled", "close_code")

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

    def _flush_soon(self) -> None:
        """Write replies at the end of this turn of the event loop, so that replies
        sent by several consumers in the same turn leave in one system call."""
        if self.writer is not None:
            if len(self.engine.writes) > self.app.config.websocket_outbound_queue:
                self._overflow()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            get_hub().loop.run_callback(self._scheduled_flush)
        elif len(self.engine.writes) >= BATCH_FRAMES:
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
            if len(engine.writes) > self.app.config.websocket_outbound_queue:
                self._overflow()
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
            self.writer = gevent.spawn(self._write_loop)
        elif eof:
            self.abort()

    def _write_loop(self) -> None:
        sendall = self.sock.sendall
        take_output = self.engine.take_output
        try:
            while True:
                data, eof = self.pending, self.pending_eof
                self.pending, self.pending_eof = b"", False
                if data:
                    sendall(data)
                if eof:
                    self.abort()
                    return
                data, eof = take_output()
                if not data and not eof:
                    return
                self.pending, self.pending_eof = data, eof
        except (OSError, ValueError):  # ValueError: a TLS socket aborted meanwhile
            self.abort()
        finally:
            self.writer = None

    def _overflow(self) -> None:
        logger.warning(
            "%s: more than %d frames wait for a client that is not reading; dropping the "
            "connection (code 1008). Raise WEBSOCKET_OUTBOUND_QUEUE or send less.",
            self.reply_channel,
            self.app.config.websocket_outbound_queue,
        )
        self.close_code = 1008
        self.engine.writes = []
        self.pending = b""
        writer = self.writer
        if writer is not None:
            writer.kill(block=False)
        self.abort()

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
