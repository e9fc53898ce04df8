"""The per-socket handler: pywsgi's, plus WebSocket upgrades, routed HTTP and limits.

``ChannelsHandler`` is a ``gevent.pywsgi.WSGIHandler`` that runs the WSGI application
as pywsgi does (the fast path), with pywsgi's per-request costs cut where a request spends
them: the head is parsed by ``read_headers`` instead of the ``email`` package, the environ
is built straight from it, the Date header is formatted once a second, a small body leaves
in the same send() as the head, and each keep-alive connection takes its turn after a
response instead of holding the process while its client keeps up. Besides,

- it sets TCP_NODELAY on the accepted socket,
- a ``GET`` with ``Upgrade: websocket`` becomes a WebSocket connection (``websocket.py``),
- a request an ``http.request`` route claims goes through the channel layer (``http.py``),
- above MAX_CONNECTIONS open sockets a request gets 503,
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
import time
from collections.abc import Iterator
from typing import Any

from gevent import get_hub, pywsgi

from .app import ChannelsApplication
from .http import RoutedRequest, claiming_route, request_message
from .proxy import forwarded
from .responses import plain_response
from .sockets import set_nodelay
from .websocket import WebSocketConnection

access_log = logging.getLogger("geventchannels.server.access")
error_log = logging.getLogger("geventchannels.server")

_BUSY = plain_response(503, "Server busy: too many open connections.\r\n")


#: Limits of the request head, as http.client (which pywsgi uses) has them.
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
#: The pause after a keep-alive response: a timer waits for the event loop's next poll,
#: so every connection that is ready meanwhile is served first (sleep(0) does not poll).
_TURN = 1e-6
#: Bodies up to this size leave in the same send() as the response head.
COALESCE_LIMIT = 65536
_END_OF_HEAD = (b"\r\n", b"\n", b"")
_KNOWN_VERSIONS = ("HTTP/1.1", "HTTP/1.0")


class RequestHeaders:
    """The request's headers as sent (names as spelled, duplicates in order). Lookups
    ignore case and give the first value, like the ``email.message.Message`` pywsgi
    builds, which costs several times as much to parse and to query."""

    __slots__ = ("_items", "_first", "status")

    def __init__(self, items: list[tuple[str, str]] | None = None):
        self._items = items if items is not None else []
        first: dict[str, str] = {}
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


def read_headers(rfile: Any) -> RequestHeaders:
    """Parse the header lines after the request line, up to the empty line.

    Raises ValueError (pywsgi answers 400) for an over-long line, too many headers, a line
    without a colon or a name with spaces (``Content-Length : 5`` is how smuggling starts).
    Folded continuation lines are joined to the header they continue."""
    readline = rfile.readline
    items: list[tuple[str, str]] = []
    while True:
        line = readline(MAX_HEADER_LINE + 1)
        if line in _END_OF_HEAD:
            return RequestHeaders(items)
        if len(line) > MAX_HEADER_LINE:
            raise ValueError("a request header line is longer than 65536 bytes")
        text = line.decode("latin-1")
        if text[0] in " \t":
            if not items:
                raise ValueError("the request headers start with a continuation line")
            name, value = items[-1]
            items[-1] = (name, f"{value} {text.strip()}")
            continue
        name, colon, value = text.partition(":")
        if not colon or not name or " " in name or "\t" in name:
            raise ValueError(f"malformed request header line {text.rstrip()!r}")
        if len(items) >= MAX_HEADERS:
            raise ValueError(f"more than {MAX_HEADERS} request headers")
        items.append((name, value.strip()))


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


class ChannelsHandler(pywsgi.WSGIHandler):
    _admitted = True
    _app: ChannelsApplication | None = None
    _routed: RoutedRequest | None = None
    _turn: Any = None
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
        self._admitted = app.connection_opened()
        try:
            super().handle()
        finally:
            app.connection_closed()
            if self._turn is not None:
                self._turn.close()
                self._turn = None

    # -- parsing: the request head and the environ, without pywsgi's email parser ------

    def read_request(self, raw_requestline: str) -> bool:
        self.requestline = requestline = raw_requestline.rstrip()
        words = requestline.split()
        if len(words) == 3:
            self.command, self.path, self.request_version = words
            if words[2] not in _KNOWN_VERSIONS and not self._check_http_version():
                raise ValueError(f"Invalid http version: {raw_requestline!r}")
        elif len(words) == 2 and words[0] == "GET":
            self.command, self.path = words
            self.request_version = "HTTP/0.9"
        else:
            raise ValueError(f"Invalid HTTP request line: {raw_requestline!r}")

        headers = self.headers = read_headers(self.rfile)
        first = headers._first
        if "content-length" in first and first.get("transfer-encoding", "").lower() == "chunked":
            del headers["content-length"]
        declared = first.get("content-length")
        length = None
        if declared is not None:
            length = int(declared)
            if length < 0:
                raise ValueError(f"Invalid Content-Length: {length!r}")
            if length and self.command == "HEAD":
                raise ValueError("Unexpected Content-Length")
        self.content_length = length

        version = self.request_version
        if version == "HTTP/1.1":
            self.close_connection = first.get("connection", "").lower() == "close"
        elif version == "HTTP/1.0":
            self.close_connection = first.get("connection", "close").lower() != "keep-alive"
        else:
            self.close_connection = True
        return True

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
        length = first.get("content-length")
        if length:
            env["CONTENT_LENGTH"] = length
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

        expect_continue = env.get("HTTP_EXPECT") == "100-continue"
        chunked = env.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        self.wsgi_input = pywsgi.Input(
            self.rfile,
            self.content_length,
            socket=self.socket if expect_continue else None,
            chunked_input=chunked,
        )
        # An upgrade request has neither a length nor chunks: its stream is the socket's.
        upgrade = (
            first.get("connection", "").lower() == "upgrade"
            or first.get("upgrade", "").lower() == "websocket"
        )
        env["wsgi.input"] = self.rfile if upgrade else self.wsgi_input
        env["wsgi.input_terminated"] = not upgrade

        app = self._app or self._find_app()
        if app is not None and app.config.proxy_headers:
            apply_proxy_headers(env, headers)
        return env

    # -- one request -----------------------------------------------------------------

    def handle_one_request(self) -> Any:
        result = super().handle_one_request()
        if result is True:
            # A keep-alive client that answers at once would otherwise have its next
            # request read and served right away, again and again, while the other
            # connections wait: one turn each keeps the slowest responses near the average.
            hub = get_hub()
            if self._turn is None:
                self._turn = hub.loop.timer(_TURN)
            hub.wait(self._turn)
        return result

    def handle_one_response(self) -> None:
        app = self._app or self.channels_app
        if not self._admitted:
            self.close_connection = True
            self.time_start = time.time()
            try:
                self.socket.sendall(_BUSY)
            except OSError:
                pass
            self.code = 503
            self.status = "503 Service Unavailable"
            self.time_finish = time.time()
            self.log_request()
            return
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

    def _wants_websocket(self) -> bool:
        upgrade = self.headers._first.get("upgrade")
        return upgrade is not None and upgrade.strip().lower() == "websocket"

    def run_application(self) -> None:
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

    # -- writing: the head and a small body in one send() ----------------------------

    def finalize_headers(self) -> None:
        if self.provided_date is None:
            self.response_headers.append((b"Date", _HttpDate.now()))
            self.provided_date = "added"  # so pywsgi does not format another one
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
