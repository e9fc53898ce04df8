"""One WebSocket connection: handshake held until a consumer answers, a reader, one writer.

Lifecycle (``run`` executes in the pywsgi handler greenlet that parsed the request):

1. The handshake request is checked (bad ones get 400/405/426 and never reach a consumer;
   a Host or Origin the policy refuses gets 403, see handshake.refusal).
2. ``websocket.connect`` is sent and the handshake is HELD until the first reply on the
   connection's reply channel: ``accept: True`` or ``text``/``bytes`` accept (101),
   ``accept: False`` or ``close`` reject (403; ``close: 1013`` 503, ``close: 1011`` 500:
   what the consumer pool sends when the consumer could not reach the channel layer, or
   raised), no reply within the handshake timeout: 403, or 503 when the message was
   still waiting for a free consumer greenlet of this process (it is taken back). A
   ``websocket.connect`` channel that stays full for CONNECT_PATIENCE seconds, or a
   channel layer that cannot be reached: 503 (a frame: close 1013).
3. The same greenlet reads the socket; the engine (frames.py) turns its bytes into whole
   messages, each sent as ``websocket.receive`` (``order`` 1, 2, ...). When the bytes end
   in a protocol violation, the consumers get up to ANSWER_PATIENCE seconds to answer the
   messages before it, then the connection fails (RFC 6455 7.1.7).
4. Replies (delivered in whichever greenlet sent them) are framed at once and written by
   the connection's single writer (writer.py), so frames never interleave.
5. When the socket ends, ``websocket.disconnect`` carries the close code.

Memory: an idle connection is its handler greenlet, this object and the engine's small
buffers; the writer exists only while a client is slow. If more than
``WEBSOCKET_OUTBOUND_QUEUE`` frames or ``WEBSOCKET_OUTBOUND_BYTES`` bytes wait for a slow
client, or all slow clients together hold more than ``WEBSOCKET_OUTBOUND_TOTAL``, the
connection is dropped (the consumer sees ``websocket.disconnect`` with code 1008), so
clients that stop reading cannot make the server's memory grow (writer.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gevent.event import Event
from websockets.http11 import Response

from ..exceptions import ChannelLayerUnavailable, MessageTooLarge
from ..logs import Tally
from . import handshake
from .frames import OPEN_STATE, FrameEngine, LazyDeflate, Message, accept_bytes, check_handshake
from .http import split_path
from .interfaces import RequestHandler
from .responses import plain_response
from .sockets import os_socket
from .writer import FrameWriter

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
#: Seconds the consumers get to answer the messages that came just before a protocol
#: violation (one reply each) before the connection fails.
ANSWER_PATIENCE = 1.0
#: Bytes asked of the socket per read.
READ_SIZE = 65536

_monotonic = time.monotonic
_tally_logger = logging.getLogger("geventchannels.server")

_connect_refused = Tally(
    "%d WebSocket handshake(s) answered 503: the websocket.connect channel stayed full for "
    "%s s (latest: %s). Run more consumers or raise that channel's capacity.",
    _tally_logger,
)
_receive_full = Tally(
    "%d WebSocket(s) closed with 1013: the websocket.receive channel stayed full for %s s "
    "(latest: %s). Run more consumers or raise that channel's capacity.",
    _tally_logger,
)
_connect_undispatched = Tally(
    "%d WebSocket handshake(s) answered 503: no consumer took websocket.connect within the "
    "handshake timeout (%s s; latest: %s), every consumer greenlet is busy (see the pool's "
    "warning for what runs)",
    _tally_logger,
)
_connect_unavailable = Tally(
    "%d WebSocket handshake(s) answered 503: websocket.connect could not be sent (latest: %s)",
    _tally_logger,
)
_receive_unavailable = Tally(
    "%d WebSocket(s) closed with 1013: websocket.receive could not be sent (latest: %s)",
    _tally_logger,
)
_disconnect_full = Tally(
    "websocket.disconnect of %d WebSocket(s) not sent: the channel stayed full for %s s "
    "(latest: %s). Consumers that track sockets in groups will keep stale members.",
    _tally_logger,
)
_disconnect_failed = Tally(
    "websocket.disconnect of %d WebSocket(s) not sent: %s (latest: %s)", _tally_logger
)


class WebSocketConnection(FrameWriter):
    __slots__ = (
        "app",
        "handler",
        "path",
        "peer",
        "reply_channel",
        "state",
        "engine",
        "early",
        "decided",
        "order",
        "last_seen",
        "ping_sent_at",
        "close_deadline",
        "awaited",
        "answered",
        "__weakref__",
    )

    engine: FrameEngine

    def __init__(self, app: ChannelsApplication, handler: RequestHandler):
        super().__init__(handler.socket, os_socket(handler.socket))
        self.app = app
        self.handler = handler
        self.path = split_path(handler.path)[0]
        address = handler.client_address
        self.peer = "{}:{}".format(*address[:2]) if isinstance(address, tuple) else str(address)
        self.reply_channel = ""
        self.state = CONNECTING
        self.early: list[dict] | None = []
        self.decided: Event | None = Event()
        self.order = 0
        self.last_seen = 0.0
        self.ping_sent_at = 0.0
        self.close_deadline = 0.0
        #: Replies still awaited (and their event) while a violation waits to be failed.
        self.awaited = 0
        self.answered: Event | None = None

    # -- lifecycle, in the handler greenlet -----------------------------------

    def run(self) -> None:
        handler, app = self.handler, self.app
        response, deflate = check_handshake(
            handler.command,
            handler.path,
            handler.request_version or "HTTP/1.1",
            handler.headers.items(),
            app.config.websocket_compression,
        )
        if response.status_code != 101:
            self._send_plain(response.serialize())
            self._log("REJECT")
            return
        if handshake.refusal(handler, app.config) is not None:
            self._send_plain(
                plain_response(403, "WebSocket connection refused: Host or Origin not allowed.\n")
            )
            self._log("REJECT")
            return
        if app.stopping:
            self._send_plain(plain_response(503, "Server is shutting down.\n"))
            self._log("REJECT")
            return
        self.reply_channel = app.register_endpoint(self, "ws")
        try:
            if self._handshake(response, deflate):
                try:
                    self._read_frames()
                finally:
                    self._finish()
        finally:
            self.state = CLOSED
            app.unregister_endpoint(self.reply_channel)

    def _handshake(self, response: Response, deflate: LazyDeflate | None) -> bool:
        app, config, handler = self.app, self.app.config, self.handler
        message = handshake.connect_message(handler, self.reply_channel, config)
        self._log("HANDSHAKING")
        timeout = config.websocket_handshake_timeout
        patience = min(CONNECT_PATIENCE, timeout)
        started = _monotonic()
        try:
            sent = app.send_when_room("websocket.connect", message, patience)
        except MessageTooLarge:
            return self._reject(431, "Request headers too large.\n")
        except ChannelLayerUnavailable as error:
            _connect_unavailable.add(error)
            return self._reject(*handshake.REFUSALS[1013])
        if not sent:
            _connect_refused.add(patience, self.path)
            return self._reject(503, "Server busy.\n")
        decision = self._await_decision(timeout - (_monotonic() - started))
        if decision is None:
            if app.withdraw(message):
                _connect_undispatched.add(timeout, self.path)
                return self._reject(503, "Server busy.\n")
            logger.warning(
                "websocket.connect for %s not answered within %s seconds; rejecting "
                "(raise WEBSOCKET_HANDSHAKE_TIMEOUT or answer sooner)",
                self.path,
                config.websocket_handshake_timeout,
            )
            return self._reject(*handshake.REFUSED)
        if not handshake.accepts(decision):
            return self._reject(*handshake.refusal_response(decision))
        subprotocol = handshake.subprotocol(handler, decision, config.ws_protocols)
        leftover = handshake.take_buffered_input(handler)
        try:
            self.sock.sendall(accept_bytes(response, subprotocol))
        except OSError:
            return False
        self.engine = FrameEngine(
            config.websocket_max_message_size, config.websocket_max_frame_size, deflate
        )
        self.state = OPEN
        self.last_seen = _monotonic()
        early, self.early, self.decided = self.early, None, None
        app.track_websocket(self)
        self._log("CONNECT")
        for reply in early or ():
            self.deliver(reply)
        if leftover:
            self._receive(leftover)
        return True

    def _await_decision(self, timeout: float) -> dict | None:
        """The first reply that accepts or rejects, or None after ``timeout``."""
        deadline = _monotonic() + timeout
        early, decided = self.early, self.decided
        assert early is not None and decided is not None  # until the handshake is decided
        while True:
            for reply in early:
                if handshake.is_decision(reply):
                    return reply
            remaining = deadline - _monotonic()
            if remaining <= 0:
                return None
            decided.clear()
            if not decided.wait(remaining):
                return None

    def _read_frames(self) -> None:
        recv = self.sock.recv
        engine = self.engine
        while True:
            try:
                data = recv(READ_SIZE)
            except (OSError, ValueError):  # ValueError: a TLS socket aborted meanwhile
                data = b""
            if not data:
                engine.receive_eof()
                if engine.writes:
                    self._flush()
                return
            if not self._receive(data):
                return

    def _receive(self, data: bytes) -> bool:
        """Pass on the messages ``data`` completes; False once the connection is over
        (the engine sent or received a close and ended the stream)."""
        engine = self.engine
        self.last_seen = _monotonic()
        self.ping_sent_at = 0.0
        messages = engine.receive(data)
        for message in messages:
            self._dispatch(message)
        if engine.violation is not None:
            if messages:
                self._await_answers(len(messages))
            self._fail_violation()
        if engine.writes:
            self._flush()
        return not engine.eof_sent

    def _dispatch(self, content: Message) -> None:
        if self.close_code is not None:
            return  # closing on our side: what the client still sends is not passed on
        self.order += 1
        message = {
            "reply_channel": self.reply_channel,
            "path": self.path,
            "order": self.order,
            "text" if type(content) is str else "bytes": content,
        }
        try:
            if not self.app.send_when_room("websocket.receive", message, FULL_PATIENCE):
                _receive_full.add(FULL_PATIENCE, self.reply_channel)
                self.close(1013)
        except ChannelLayerUnavailable as error:
            _receive_unavailable.add(error)
            self.close(1013)
        except MessageTooLarge:
            logger.warning(
                "%s: a %d-byte message does not fit the channel layer's max_message_size "
                "(%s); closing with 1009. Keep WEBSOCKET_MAX_MESSAGE_SIZE below the layer's "
                "limit or raise the layer's max_message_size.",
                self.reply_channel,
                len(content),
                getattr(self.app.layer, "max_message_size", "?"),
            )
            self.close(1009)

    def _await_answers(self, count: int) -> None:
        """Before failing for a violation, let the replies to the ``count`` messages that
        came before it leave first (what Autobahn calls strict), for ANSWER_PATIENCE
        seconds at most."""
        if self.close_code is not None:
            return
        answered = self.answered = Event()
        self.awaited = count
        try:
            answered.wait(ANSWER_PATIENCE)
        finally:
            self.awaited = 0
            self.answered = None

    def _answer_seen(self, last: bool = False) -> None:
        self.awaited = 0 if last else self.awaited - 1
        if not self.awaited and self.answered is not None:
            self.answered.set()

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
        self.abort()
        code = self.close_code or self.engine.close_code_seen() or 1006
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
            if state is CONNECTING and self.early is not None and self.decided is not None:
                self.early.append(message)
                self.decided.set()
            return
        if self.awaited:
            self._answer_seen()
        engine = self.engine
        if engine.state is not OPEN_STATE or self.close_code is not None:
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
        if self.state is not OPEN or engine.state is not OPEN_STATE:
            return
        if self.awaited:
            self._answer_seen(last=True)
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
        if engine.state is not OPEN_STATE:
            return
        self.close_code = code
        engine.fail(code, reason)
        self.close_deadline = _monotonic() + CLOSE_TIMEOUT
        self._flush()

    def _fail_violation(self) -> None:
        """Fail for the violation the engine found; if the server closed meanwhile, its
        close frame stands and only the stream ends."""
        engine = self.engine
        if engine.state is OPEN_STATE and engine.violation is not None:
            self.close_code = engine.violation[0]
            self.close_deadline = _monotonic() + CLOSE_TIMEOUT
        engine.fail_violation()
        self._flush()

    def check_keepalive(self, now: float, interval: float, timeout: float) -> None:
        """Called by the application's sweeper: ping after ``interval`` seconds of
        silence, fail with 1011 when the pong is ``timeout`` late, drop connections whose
        closing handshake is overdue."""
        if self.state is not OPEN:
            return
        if self.close_deadline:
            if now > self.close_deadline:
                self.abort()
        elif self.ping_sent_at:
            if now - self.ping_sent_at > timeout:
                logger.info(
                    "%s did not answer a ping within %s seconds; closing with 1011",
                    self.reply_channel,
                    timeout,
                )
                if self.writer is not None:
                    self.close_code = 1011
                    self.abort()
                else:
                    self._fail(1011, "keepalive ping timeout")
        elif interval and now - self.last_seen > interval:
            self.engine.send_ping(b"")
            self.ping_sent_at = now
            self._flush()

    # -- helpers ---------------------------------------------------------------

    def _reject(self, status: int, text: str) -> bool:
        """Answer the handshake with ``status``; False, for ``_handshake`` to return."""
        self._send_plain(plain_response(status, text))
        self._log("REJECT")
        return False

    def _log(self, event: str) -> None:
        access_log.info("WebSocket %s %s [%s]", event, self.path, self.peer)
