"""The per-socket handler: pywsgi's, plus strict HTTP/1.1 framing, WebSocket upgrades,
routed HTTP and limits.

``ChannelsHandler`` is a ``gevent.pywsgi.WSGIHandler`` that runs the WSGI application
as pywsgi does (the fast path), with pywsgi's per-request costs cut where a request spends
them: the head is read whole from the buffer when it is there and parsed by http11.py
(RFC 9112, strictly: see that module) instead of the ``email`` package, the environ is
built straight from it, the Date header is formatted once a second, a small body leaves
in the same send() as the head, and each keep-alive connection takes its turn after a
response instead of holding the process while its client keeps up. Besides,

- it sets TCP_NODELAY on the accepted socket,
- a head must arrive within HTTP_HEAD_TIMEOUT and HTTP_MAX_HEAD_SIZE, an idle keep-alive
  connection is closed after HTTP_KEEPALIVE_TIMEOUT (heads.py),
- a body is read within HTTP_BODY_TIMEOUT and HTTP_BODY_MIN_RATE; one that cannot be read
  to its end gets 400 or 408 (if no response started) and its connection closed (body.py),
- at MAX_CONNECTIONS a new connection takes the slot of the one that has waited longest
  for a head, or gets 503 at once when none waits,
- a ``GET`` with ``Upgrade: websocket`` becomes a WebSocket connection (``websocket.py``),
- a request an ``http.request`` route claims goes through the channel layer (``http.py``),
- while the server stops, requests are still read and served, with ``Connection: close``,
- access log lines go to the ``geventchannels.server.access`` logger.

It finds its :class:`ChannelsApplication` as ``server.channels_app`` (else the one started
first in the process, ``ChannelsApplication.current``).

Standalone::

    app = ChannelsApplication(get_wsgi_application())
    app.start()
    ChannelsWSGIServer(("127.0.0.1", 8000), app).serve_forever()

Under gunicorn, whose ``GeventPyWSGIWorker`` builds the server itself as
``server_class(listener, application, handler_class=..., spawn=..., log=..., ...)``: set
``wsgi_handler = ChannelsHandler`` on the worker class and, once the server objects exist,
``server.channels_app = app`` on each (or rely on ``ChannelsApplication.current`` by
starting the application before the servers accept). ``ChannelsWSGIServer`` also accepts
that signature (``application`` positional, ``channels_app`` keyword).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import gevent
from gevent import get_hub, getcurrent, pywsgi

from ..logs import Tally
from .app import ChannelsApplication
from .body import BodyError, RequestBody
from .heads import HeadTimeout, read_head
from .http import RoutedRequest, claiming_route, request_message
from .http11 import Head, HeadError, RequestHeaders, parse_head
from .proxy import forwarded
from .responses import plain_response, plain_text
from .sockets import set_nodelay
from .websocket import WebSocketConnection

__all__ = ["ChannelsHandler", "ChannelsWSGIServer", "RequestHeaders"]

access_log = logging.getLogger("geventchannels.server.access")
error_log = logging.getLogger("geventchannels.server")

_BUSY = plain_response(503, "Server busy: too many open connections.\r\n")
_HEAD_TIMEOUT = plain_response(408, "The request head did not arrive in time.\r\n")
#: Seconds a connection refused at MAX_CONNECTIONS is kept to read what the client sends,
#: so that closing it does not reset the connection before the client reads the 503.
REFUSAL_LINGER = 1.0

_refused = Tally(
    "%d connection(s) answered 503: MAX_CONNECTIONS (%d) open and none waiting for a request head.",
    error_log,
)
_bad_heads = Tally("%d request(s) refused (latest: %d from %s: %s)", error_log)
_bad_bodies = Tally(
    "%d request(s) closed before their body arrived whole (latest: %s, from %s: %s)", error_log
)

#: The pause after a keep-alive response: a timer waits for the event loop's next poll,
#: so every connection that is ready meanwhile is served first (sleep(0) does not poll).
_TURN = 1e-6
#: Bodies up to this size leave in the same send() as the response head.
COALESCE_LIMIT = 65536


#: Header name -> its environ key (None for names with "_", which pywsgi drops too).
_ENVIRON_KEYS: dict[str, str | None] = {}
_NOT_HTTP_KEYS = ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH")


def environ_key(name: str) -> str | None:
    key = _ENVIRON_KEYS.get(name, "")
    if key == "":
        key = None if "_" in name else "HTTP_" + name.upper().replace("-", "_")
        if key in _NOT_HTTP_KEYS:
            key = None
        if len(_ENVIRON_KEYS) < 1024:
            _ENVIRON_KEYS[name] = key
    return key


class _HttpDate:
    """The Date header's value, formatted once per second instead of once per response."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        now = time.time()
        second = int(now)
        if second != cls.second:
            cls.value = pywsgi.format_date_time(now)
            cls.second = second
        return cls.value


def apply_proxy_headers(environ: dict, headers: RequestHeaders) -> None:
    """PROXY_HEADERS on the fast path: the client address and scheme Django sees are the
    ones the proxy reports (the rule is proxy.py's)."""
    client, secure = forwarded(headers)
    if client is not None:
        environ["REMOTE_ADDR"], port = client
        environ["REMOTE_PORT"] = str(port)
    if secure is not None:
        environ["wsgi.url_scheme"] = "https" if secure else "http"


def _peer(address: Any) -> str:
    return "{}:{}".format(*address[:2]) if isinstance(address, tuple) else str(address)


class ChannelsHandler(pywsgi.WSGIHandler):
    _app: ChannelsApplication | None = None
    _routed: RoutedRequest | None = None
    _turn: Any = None
    _chunked = False
    #: What the client got when the application's read of the body failed ("" if none).
    _body_outcome = ""
    #: A request was served on this connection (the next head is a keep-alive one).
    _served = False
    #: Some of the current head has arrived.
    head_started = False
    headers = RequestHeaders()
    # Set by pywsgi (status: bytes once start_response ran, str on the 503 shortcut).
    status: Any
    provided_date: Any

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None):
        set_nodelay(sock)
        super().__init__(sock, address, server, rfile)

    def _find_app(self) -> ChannelsApplication | None:
        return getattr(self.server, "channels_app", None) or ChannelsApplication.current

    @property
    def channels_app(self) -> ChannelsApplication:
        app = self._app or self._find_app()
        if app is None:
            raise RuntimeError(
                "ChannelsHandler has no ChannelsApplication: set server.channels_app, or "
                "start() a ChannelsApplication before the server accepts connections"
            )
        return app

    def handle(self) -> None:
        app = self._app = self.channels_app
        self.greenlet = getcurrent()
        self._accepted = time.monotonic()
        if not app.connection_opened() and not app.waiting_heads.evict_oldest():
            app.connection_closed()
            self._refuse(app.config.max_connections)
            return
        try:
            super().handle()
        finally:
            app.waiting_heads.done(self)
            app.connection_closed()
            if self._turn is not None:
                self._turn.close()
                self._turn = None

    def _refuse(self, limit: int) -> None:
        """Answer 503 before reading anything, then close without resetting the
        connection under the client's feet."""
        _refused.add(limit)
        sock = self.socket
        try:
            with gevent.Timeout(REFUSAL_LINGER, False):
                sock.sendall(_BUSY)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
        except OSError:
            pass
        finally:
            self.rfile.close()
            sock.close()
            self.__dict__.pop("socket", None)
            self.__dict__.pop("rfile", None)

    # -- reading: the request head, within its deadline and size ----------------------

    def handle_one_request(self) -> Any:
        """Read and answer one request; None when the connection is to be closed, True
        to read the next one (pywsgi's ``handle`` loop)."""
        if self.rfile.closed:
            return None
        try:
            data = self._read_head()
            if data is None:
                return None
            head = parse_head(data)
        except HeadTimeout:
            if self.head_started:
                self._send_quietly(_HEAD_TIMEOUT)
            return None
        except HeadError as error:
            self._refuse_head(error)
            return None
        except OSError:
            return None
        self._take(head)
        self.response_length = 0
        self.environ = self.get_environ()
        self.application = self.server.application
        self.handle_one_response()
        if self.close_connection or self.rfile.closed:
            return None
        self._served = True
        # A keep-alive client that answers at once would otherwise have its next
        # request read and served right away, again and again, while the other
        # connections wait: one turn each keeps the slowest responses near the average.
        hub = get_hub()
        if self._turn is None:
            self._turn = hub.loop.timer(_TURN)
        hub.wait(self._turn)
        return True

    def _read_head(self) -> bytes | None:
        """The head's bytes; None when the client closed the connection first."""
        config = self._app.config  # type: ignore[union-attr]
        waiting = self._app.waiting_heads  # type: ignore[union-attr]
        self.head_started = False
        if self._served:
            waiting.wait(self, time.monotonic() + config.http_keepalive_timeout)
        else:
            waiting.wait(self, self._accepted + config.http_head_timeout)
        try:
            buffered = self.rfile.peek(1)
            if not buffered:
                return None
            self.head_started = True
            if self._served and b"\r\n\r\n" not in buffered:
                waiting.wait(self, time.monotonic() + config.http_head_timeout)
            return read_head(self.rfile, config.http_max_head_size, buffered)
        finally:
            waiting.done(self)

    def _take(self, head: Head) -> None:
        self.command = head.method
        self.path = head.target
        self.request_version = head.version
        self.headers = head.headers
        self.content_length = head.content_length
        self._chunked = head.chunked
        if head.chunked and "content-length" in head.headers._first:
            del head.headers["content-length"]
        self.close_connection = head.close or self._app.stopping  # type: ignore[union-attr]

    def _refuse_head(self, error: HeadError) -> None:
        self.close_connection = True
        _bad_heads.add(error.status, _peer(self.client_address), error.reason)
        self._send_quietly(plain_response(error.status, f"{error.reason}\n"))

    def _send_quietly(self, data: bytes) -> None:
        try:
            self.socket.sendall(data)
        except OSError:
            pass

    def get_environ(self) -> dict:
        env = self.server.get_environ()
        env["REQUEST_METHOD"] = self.command
        env["SCRIPT_NAME"] = ""
        path, _, query = self.path.partition("?")
        env["PATH_INFO"] = pywsgi.unquote_latin1(path)
        env["QUERY_STRING"] = query
        headers = self.headers
        first = headers._first
        content_type = first.get("content-type")
        if content_type is not None:
            env["CONTENT_TYPE"] = content_type
        if self.content_length is not None:
            env["CONTENT_LENGTH"] = str(self.content_length)
        env["SERVER_PROTOCOL"] = self.request_version
        address = self.client_address
        if isinstance(address, tuple):
            env["REMOTE_ADDR"] = str(address[0])
            env["REMOTE_PORT"] = str(address[1])
        for name, value in headers._items:
            key = environ_key(name)
            if key is None:
                continue
            if key in env:
                env[key] += ("; " if "COOKIE" in key else ",") + value
            else:
                env[key] = value

        expect_continue = env.get("HTTP_EXPECT", "").lower() == "100-continue"
        app = self._app
        config = app.config  # type: ignore[union-attr]
        self.wsgi_input = RequestBody(
            self.rfile,
            self.content_length,
            self.socket if expect_continue else None,
            self._chunked,
            self,
            app.waiting_bodies,  # type: ignore[union-attr]
            config.http_max_head_size,
        )
        # An upgrade request has neither a length nor chunks: its stream is the socket's.
        upgrade = (
            first.get("connection", "").lower() == "upgrade"
            or first.get("upgrade", "").lower() == "websocket"
        )
        env["wsgi.input"] = self.rfile if upgrade else self.wsgi_input
        env["wsgi.input_terminated"] = not upgrade
        if config.proxy_headers:
            apply_proxy_headers(env, headers)
        return env

    # -- one request -----------------------------------------------------------------

    def handle_one_response(self) -> None:
        app = self._app or self.channels_app
        if self._wants_websocket():
            self.close_connection = True
            try:
                WebSocketConnection(app, self).run()
            except Exception:
                error_log.exception("WebSocket connection %s failed", self.path)
            return
        self._routed = None
        if app.http_routed and claiming_route(self, app):
            self._routed = RoutedRequest(app, self, request_message(self, app))
        app.request_started()
        try:
            super().handle_one_response()
        finally:
            self._routed = None
            app.request_finished()
        failure = self.wsgi_input.failure
        if failure is not None:
            self.close_connection = True
            outcome = self._body_outcome or f"after a {self.code}"
            _bad_bodies.add(outcome, _peer(self.client_address), failure.reason)

    def _wants_websocket(self) -> bool:
        upgrade = self.headers._first.get("upgrade")
        return upgrade is not None and upgrade.strip().lower() == "websocket"

    def run_application(self) -> None:
        self._body_outcome = ""
        try:
            routed = self._routed
            if routed is None:
                return super().run_application()
            self.result = routed.respond(self.start_response)
            try:
                self.process_result()
            finally:
                close = getattr(self.result, "close", None)
                self.result = None
                if close is not None:
                    close()
        except BodyError as error:
            self._body_failed(error)

    def _body_failed(self, error: BodyError) -> None:
        """The application's read of the body failed (body.py): answer with the error's
        status unless the response has started (the client may be gone: then nothing)."""
        self.close_connection = True
        if self.headers_sent:
            self._body_outcome = f"after a {self.code}"
            return
        line, headers, body = plain_text(error.status, f"{error.reason}\n")
        try:
            self.start_response(line, headers)
            self.write(body)
            self._body_outcome = f"answered {error.status}"
        except OSError:
            self._body_outcome = "the client is gone"

    # -- writing: the head and a small body in one send() ----------------------------

    def finalize_headers(self) -> None:
        if self.provided_date is None:
            self.response_headers.append((b"Date", _HttpDate.now()))
            self.provided_date = "added"  # so pywsgi does not format another one
        if self._app.stopping:  # type: ignore[union-attr]
            self.close_connection = True
        if self.close_connection and self.request_version == "HTTP/1.1":
            # Say so when this response ends the connection (server stopping, a request
            # framed by both Content-Length and Transfer-Encoding, ...).
            if not any(name.lower() == b"connection" for name, _ in self.response_headers):
                self.response_headers.append((b"Connection", b"close"))
        super().finalize_headers()

    def _write_with_headers(self, data: Any) -> None:
        self.headers_sent = True
        self.finalize_headers()
        head = b"".join(
            [
                b"HTTP/1.1 ",
                self.status,
                b"\r\n",
                *[b"%s: %s\r\n" % header for header in self.response_headers],
                b"\r\n",
            ]
        )
        if not data:
            self._sendall(head)
        elif len(data) > COALESCE_LIMIT:
            self._sendall(head)
            self._write(data)
        elif self.response_use_chunked:
            self._sendall(b"%s%x\r\n%s\r\n" % (head, len(data), data))
        else:
            self._sendall(head + data)

    # -- logs ------------------------------------------------------------------------

    def log_request(self) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        address = self.client_address
        peer = "{}:{}".format(*address[:2]) if isinstance(address, tuple) else str(address)
        duration = (self.time_finish or time.time()) - self.time_start
        code = self.code if self.code is not None else (self.status or "-")
        access_log.info("HTTP %s %s %s [%.2f, %s]", self.command, self.path, code, duration, peer)

    def log_error(self, msg: str, *args: Any) -> None:
        error_log.warning(msg, *args)


class ChannelsWSGIServer(pywsgi.WSGIServer):
    """A pywsgi server whose connections are handled by :class:`ChannelsHandler`.

    ``ChannelsWSGIServer(listener, channels_app)`` serves ``channels_app.wsgi_app``; the
    pywsgi signature ``(listener, wsgi_application, channels_app=app, ...)`` works too.
    """

    handler_class = ChannelsHandler

    def __init__(
        self,
        listener: Any,
        application: Any = None,
        *,
        channels_app: ChannelsApplication | None = None,
        **kwargs: Any,
    ):
        if isinstance(application, ChannelsApplication):
            channels_app, application = application, application.wsgi_app
        if channels_app is None:
            channels_app = ChannelsApplication.current
        if application is None and channels_app is not None:
            application = channels_app.wsgi_app
        kwargs.setdefault("log", None)
        kwargs.setdefault("error_log", error_log)
        super().__init__(listener, application, **kwargs)
        self.channels_app = channels_app

    def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> Any:
        """TLS: the handshake gets HTTP_HEAD_TIMEOUT too, so a client that opens a
        connection and never says hello does not hold it for good."""
        app = self.channels_app or ChannelsApplication.current
        timeout = app.config.http_head_timeout if app is not None else None
        try:
            with gevent.Timeout(timeout):
                tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except (gevent.Timeout, OSError):
            client_socket.close()
            return None
        try:
            return self.handle(tls_socket, address)
        finally:
            tls_socket.close()
