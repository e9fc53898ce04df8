"""One WebSocket connection: handshake held until a consumer answers, a reader, one writer.

Lifecycle (``run`` executes in the pywsgi handler greenlet that parsed the request):

1. The handshake request is checked (bad ones get 400/405/426 and never reach a consumer).
2. ``websocket.connect`` is sent and the handshake is HELD until the first reply on the
   connection's reply channel: ``accept: True`` or ``text``/``bytes`` accept (101),
   ``accept: False`` or ``close`` reject (403), no reply within the handshake timeout: 403,
   a ``websocket.connect`` channel that stays full for CONNECT_PATIENCE seconds: 503.
3. The same greenlet reads frames and sends ``websocket.receive`` (``order`` 1, 2, ...).
4. Replies (delivered in whichever greenlet sent them) are framed at once and written
   straight to the socket when it can take them; only when the socket is full does a
   writer greenlet start, and it drains everything queued meanwhile in batched writes.
   Nothing else ever writes to the socket, so frames never interleave.
5. When the socket ends, ``websocket.disconnect`` carries the close code.

Memory: an idle connection is its handler greenlet, this object and the engine's small
buffers; the writer exists only while a client is slow. If more than
``WEBSOCKET_OUTBOUND_QUEUE`` frames wait for a slow client the connection is dropped (the
consumer sees ``websocket.disconnect`` with code 1008), so a client that stops reading
cannot make the server's memory grow.
"""

from __future__ import annotations

import logging
import socket
import time
from codecs import getincrementaldecoder
from typing import TYPE_CHECKING, Any

import gevent
import gevent.socket
from gevent import get_hub
from gevent.event import Event

from ..exceptions import MessageTooLarge
from . import wsproto_engine as engine_module
from .app import Tally
from .http import endpoints, header_list, split_path
from .wsproto_engine import BINARY, CONT, TEXT, FrameEngine

if TYPE_CHECKING:
    from .app import ChannelsApplication

logger = logging.getLogger("geventchannels.server.websocket")
access_log = logging.getLogger("geventchannels.server.access")

CONNECTING, OPEN, CLOSED = "connecting", "open", "closed"

#: Seconds a client gets to answer our close frame before the TCP connection is dropped.
CLOSE_TIMEOUT = 5.0
#: Seconds a handshake waits for room in a full websocket.connect channel before 503 (at
#: most the handshake timeout): in a burst of connections the consumers lag the accepts.
CONNECT_PATIENCE = 1.0
#: Seconds a reader waits for room in a full websocket.receive channel before closing 1013.
FULL_PATIENCE = 1.0
#: Seconds a closed connection waits for room in a full websocket.disconnect channel.
DISCONNECT_PATIENCE = 10.0
#: Frames a batch may collect before it is written without waiting for the loop's turn.
BATCH_FRAMES = 64
#: Bytes asked of the socket per read.
READ_SIZE = 65536

_monotonic = time.monotonic


_connect_refused = Tally(
    "%d WebSocket handshake(s) answered 503: the websocket.connect channel stayed full for "
    "%s s (latest: %s). Run more consumers or raise that channel's capacity."
)
_receive_full = Tally(
    "%d WebSocket(s) closed with 1013: the websocket.receive channel stayed full for %s s "
    "(latest: %s). Run more consumers or raise that channel's capacity."
)
_disconnect_full = Tally(
    "websocket.disconnect of %d WebSocket(s) not sent: the channel stayed full for %s s "
    "(latest: %s). Consumers that track sockets in groups will keep stale members."
)
_disconnect_failed = Tally("websocket.disconnect of %d WebSocket(s) not sent: %s (latest: %s)")


def choose_subprotocol(offered: list[str], supported: list[str]) -> str | None:
    """The first of the server's CHANNELS_WS_PROTOCOLS that the client offered."""
    for protocol in supported:
        if protocol in offered:
            return protocol
    return None


class WebSocketConnection:
    __slots__ = (
        "app",
        "handler",
        "sock",
        "raw",
        "path",
        "peer",
        "reply_channel",
        "state",
        "engine",
        "early",
        "decided",
        "order",
        "writer",
        "pending",
        "pending_eof",
        "last_seen",
        "ping_sent_at",
        "close_deadline",
        "close_code",
        "fragments",
        "fragment_text",
        "decoder",
        "flush_scheduled",
        "__weakref__",
    )

    def __init__(self, app: ChannelsApplication, handler: Any):
        self.app = app
        self.handler = handler
        self.sock = handler.socket
        # Replies are first tried with a non-blocking send on the real socket.
        self.raw = (
            getattr(self.sock, "_sock", None)
            if isinstance(self.sock, gevent.socket.socket)
            else None
        )
        self.path = split_path(handler.path)[0]
        address = handler.client_address
        self.peer = "{}:{}".format(*address[:2]) if isinstance(address, tuple) else str(address)
        self.reply_channel = ""
        self.state = CONNECTING
        self.engine: FrameEngine | None = None
        self.early: list[dict] | None = []
        self.decided: Event | None = Event()
        self.order = 0
        self.writer = None
        self.pending = b""
        self.pending_eof = False
        self.last_seen = 0.0
        self.ping_sent_at = 0.0
        self.close_deadline = 0.0
        self.close_code: int | None = None
        self.fragments: list[bytes] | None = None
        self.fragment_text = False
        self.decoder = None
        self.flush_scheduled = False

    # -- lifecycle, in the handler greenlet -----------------------------------

    def run(self) -> None:
        handler = self.handler
        response = engine_module.check_handshake(
            handler.command,
            handler.path,
            handler.request_version or "HTTP/1.1",
            handler.headers.items(),
        )
        if response.status_code != 101:
            self._send_plain(response.serialize())
            self._log("REJECT")
            return
        app = self.app
        if app.stopping:
            self._send_plain(engine_module.http_response(503, "Server is shutting down.\n"))
            self._log("REJECT")
            return
        self.reply_channel = app.register_endpoint(self, "ws")
        try:
            if self._handshake(response):
                try:
                    self._read_frames()
                finally:
                    self._finish()
        finally:
            self.state = CLOSED
            app.unregister_endpoint(self.reply_channel)

    def _handshake(self, response: Any) -> bool:
        app, config, handler = self.app, self.app.config, self.handler
        scheme, client, server = endpoints(handler, config.proxy_headers, "wss", "ws")
        path, query = split_path(handler.path)
        message = {
            "reply_channel": self.reply_channel,
            "scheme": scheme,
            "path": path,
            "query_string": query,
            "root_path": config.root_path,
            "headers": header_list(handler.headers),
            "client": client,
            "server": server,
            "order": 0,
        }
        self._log("HANDSHAKING")
        timeout = config.websocket_handshake_timeout
        patience = min(CONNECT_PATIENCE, timeout)
        started = _monotonic()
        try:
            sent = app.send_when_room("websocket.connect", message, patience)
        except MessageTooLarge:
            self._send_plain(engine_module.http_response(431, "Request headers too large.\n"))
            self._log("REJECT")
            return False
        if not sent:
            _connect_refused.add(patience, path)
            self._send_plain(engine_module.http_response(503, "Server busy.\n"))
            self._log("REJECT")
            return False
        decision = self._await_decision(timeout - (_monotonic() - started))
        if decision is None or not self._accepts(decision):
            if decision is None:
                logger.warning(
                    "websocket.connect for %s not answered within %s seconds; rejecting "
                    "(raise WEBSOCKET_HANDSHAKE_TIMEOUT or answer sooner)",
                    path,
                    config.websocket_handshake_timeout,
                )
            self._send_plain(engine_module.http_response(403, "WebSocket connection refused.\n"))
            self._log("REJECT")
            return False
        offered = handler.headers.get_all("Sec-WebSocket-Protocol") or ()
        subprotocol = decision.get("subprotocol") or choose_subprotocol(
            engine_module.offered_subprotocols(offered), config.ws_protocols
        )
        leftover = self._take_buffered_input()
        try:
            self.sock.sendall(engine_module.accept_bytes(response, subprotocol))
        except OSError:
            return False
        self.engine = FrameEngine(
            config.websocket_max_message_size, config.websocket_max_frame_size
        )
        self.state = OPEN
        self.last_seen = _monotonic()
        early, self.early, self.decided = self.early, None, None
        app.track_websocket(self)
        self._log("CONNECT")
        for reply in early:
            self.deliver(reply)
        if leftover:
            self._receive(leftover)
        return True

    def _await_decision(self, timeout: float) -> dict | None:
        """The first reply that accepts or rejects, or None after ``timeout``."""
        deadline = _monotonic() + timeout
        early = self.early
        while True:
            for reply in early:
                if "accept" in reply or "close" in reply or "text" in reply or "bytes" in reply:
                    return reply
            remaining = deadline - _monotonic()
            if remaining <= 0:
                return None
            self.decided.clear()
            if not self.decided.wait(remaining):
                return None

    @staticmethod
    def _accepts(reply: dict) -> bool:
        if reply.get("accept") is False:
            return False
        if reply.get("accept") or reply.get("text") is not None or reply.get("bytes") is not None:
            return True
        return not reply.get("close")

    def _take_buffered_input(self) -> bytes:
        """Bytes pywsgi's reader buffered past the request (a client that sent frames
        early), and release that reader: the connection reads the socket directly."""
        handler = self.handler
        rfile = handler.__dict__.pop("rfile", None)
        data = b""
        if rfile is not None:
            timeout = self.sock.timeout
            try:
                self.sock.settimeout(0.0)
                data = rfile.peek(READ_SIZE) or b""
                if data:
                    data = rfile.read(len(data))
            except (OSError, ValueError):
                data = b""
            finally:
                self.sock.settimeout(timeout)
                rfile.close()
        handler.environ = None
        for name in ("wsgi_input", "headers"):  # the class attributes take their place
            handler.__dict__.pop(name, None)
        return data

    def _read_frames(self) -> None:
        recv = self.sock.recv
        engine = self.engine
        while True:
            try:
                data = recv(READ_SIZE)
            except OSError:
                data = b""
            if not data:
                engine.receive_eof()
                if engine.writes:
                    self._flush()
                return
            if not self._receive(data):
                return

    def _receive(self, data: bytes) -> bool:
        """Feed bytes to the engine and act on the frames; False once the connection
        is over (the engine sent or received a close and ended the stream)."""
        engine = self.engine
        self.last_seen = _monotonic()
        self.ping_sent_at = 0.0
        engine.receive_data(data)
        events = engine.events
        if events:
            engine.events = []
            for frame in events:
                opcode = frame.opcode
                if opcode is TEXT or opcode is BINARY:
                    if frame.fin:
                        if opcode is TEXT:
                            try:
                                text = frame.data.decode()
                            except UnicodeDecodeError:
                                self._fail(1007, "invalid UTF-8")
                                break
                            self._dispatch("text", text)
                        else:
                            self._dispatch("bytes", frame.data)
                    else:
                        self.fragments = [frame.data]
                        self.fragment_text = opcode is TEXT
                        if self.fragment_text and not self._check_utf8(frame.data, False):
                            break
                elif opcode is CONT:
                    if self.fragments is None:
                        continue
                    self.fragments.append(frame.data)
                    if self.fragment_text and not self._check_utf8(frame.data, frame.fin):
                        break
                    if frame.fin:
                        payload = b"".join(self.fragments)
                        self.fragments = None
                        if self.fragment_text:
                            self.decoder = None
                            self._dispatch("text", payload.decode())
                        else:
                            self._dispatch("bytes", payload)
        if engine.writes:
            self._flush()
        return not engine.eof_sent

    def _check_utf8(self, data: bytes, final: bool) -> bool:
        """Fail fast on invalid UTF-8 in a fragmented text message (RFC 6455 8.1)."""
        if self.decoder is None:
            self.decoder = getincrementaldecoder("utf-8")()
        try:
            self.decoder.decode(data, final)
        except UnicodeDecodeError:
            self.fragments = None
            self.decoder = None
            self._fail(1007, "invalid UTF-8")
            return False
        return True

    def _dispatch(self, key: str, value: Any) -> None:
        if self.close_code is not None:
            return  # closing on our side: what the client still sends is not passed on
        self.order += 1
        message = {
            "reply_channel": self.reply_channel,
            "path": self.path,
            "order": self.order,
            key: value,
        }
        try:
            if not self.app.send_when_room("websocket.receive", message, FULL_PATIENCE):
                _receive_full.add(FULL_PATIENCE, self.reply_channel)
                self.close(1013)
        except MessageTooLarge:
            logger.warning(
                "%s: a %d-byte message does not fit the channel layer's max_message_size "
                "(%s); closing with 1009. Keep WEBSOCKET_MAX_MESSAGE_SIZE below the layer's "
                "limit or raise the layer's max_message_size.",
                self.reply_channel,
                len(value),
                getattr(self.app.layer, "max_message_size", "?"),
            )
            self.close(1009)

    def _finish(self) -> None:
        """After the reader stops: let the writer finish (briefly), close the socket and
        tell consumers."""
        self.state = CLOSED
        self.app.untrack_websocket(self)
        writer = self.writer
        if writer is not None:
            writer.join(timeout=1.0)
            if self.writer is not None:
                writer.kill(block=False)
        self._drop()
        engine = self.engine
        code = self.close_code or engine.received_close_code() or engine.sent_close_code() or 1006
        self.order += 1
        message = {
            "reply_channel": self.reply_channel,
            "code": code,
            "path": self.path,
            "order": self.order,
        }
        try:
            # Many sockets closing at once: wait for room rather than lose the message
            # that lets consumers leave groups.
            if not self.app.send_when_room("websocket.disconnect", message, DISCONNECT_PATIENCE):
                _disconnect_full.add(DISCONNECT_PATIENCE, self.reply_channel)
        except Exception as error:
            _disconnect_failed.add(error, self.reply_channel)
        self._log("DISCONNECT")

    # -- replies, in whichever greenlet sent them ------------------------------

    def deliver(self, message: dict) -> None:
        """Act on a reply: ``text``/``bytes`` frames, ``close``, ``accept``."""
        state = self.state
        if state is not OPEN:
            if state is CONNECTING:
                self.early.append(message)
                self.decided.set()
            return
        engine = self.engine
        if engine.state is not engine_module.OPEN_STATE or self.close_code is not None:
            return
        text = message.get("text")
        data = message.get("bytes")
        try:
            if text is not None:
                if data is not None:
                    logger.error(
                        "reply to %s has both 'text' and 'bytes'; send one of them per "
                        "message (message dropped)",
                        self.reply_channel,
                    )
                    return
                engine.send_text(text.encode())
            elif data is not None:
                engine.send_binary(data)
        except (AttributeError, TypeError):
            logger.error(
                "reply to %s: 'text' must be str and 'bytes' bytes; got %s (message dropped)",
                self.reply_channel,
                type(text if text is not None else data).__name__,
            )
            return
        close = message.get("close")
        if close:
            self.close(1000 if close is True else close)
        elif text is not None or data is not None:
            self._flush_soon()

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake with ``code``; the client has CLOSE_TIMEOUT
        seconds to answer before the TCP connection is dropped."""
        engine = self.engine
        if self.state is not OPEN or engine.state is not engine_module.OPEN_STATE:
            return
        try:
            engine.send_close(int(code))
        except Exception:
            logger.error(
                "invalid close code %r for %s; closing with 1000 instead (use 1000 or 3000-4999)",
                code,
                self.reply_channel,
            )
            code = 1000
            engine.send_close(code)
        self.close_code = code
        self.close_deadline = _monotonic() + CLOSE_TIMEOUT
        self._flush()

    def _fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 7.1.7): close frame, then end the stream."""
        engine = self.engine
        if engine.state is not engine_module.OPEN_STATE:
            return
        self.close_code = code
        engine.fail(code, reason)
        self.close_deadline = _monotonic() + CLOSE_TIMEOUT
        self._flush()

    def check_keepalive(self, now: float, interval: float, timeout: float) -> None:
        """Called by the application's sweeper: ping after ``interval`` seconds of
        silence, fail with 1011 when the pong is ``timeout`` late, drop connections whose
        closing handshake is overdue."""
        if self.state is not OPEN:
            return
        if self.close_deadline:
            if now > self.close_deadline:
                self._drop()
        elif self.ping_sent_at:
            if now - self.ping_sent_at > timeout:
                logger.info(
                    "%s did not answer a ping within %s seconds; closing with 1011",
                    self.reply_channel,
                    timeout,
                )
                if self.writer is not None:
                    self.close_code = 1011
                    self._drop()
                else:
                    self._fail(1011, "keepalive ping timeout")
        elif interval and now - self.last_seen > interval:
            self.engine.send_ping(b"")
            self.ping_sent_at = now
            self._flush()

    # -- the single writer -----------------------------------------------------

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
                    self._drop()
                    return
                if sent == len(data):
                    if eof:
                        self._drop()
                    return
                data = data[sent:]
            self.pending = data
            self.pending_eof = eof
            self.writer = gevent.spawn(self._write_loop)
        elif eof:
            self._drop()

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
                    self._drop()
                    return
                data, eof = take_output()
                if not data and not eof:
                    return
                self.pending, self.pending_eof = data, eof
        except OSError:
            self._drop()
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
        self._drop()

    def _drop(self) -> None:
        """End the TCP connection now; the reader wakes up with EOF. Also how the
        engine's end of stream is carried out: after a close handshake or a failure the
        server closes first (RFC 6455 7.1.1)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- helpers ---------------------------------------------------------------

    def _send_plain(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def _log(self, event: str) -> None:
        access_log.info("WebSocket %s %s [%s]", event, self.path, self.peer)
