"""The per-socket handler: pywsgi's, plus WebSocket upgrades, routed HTTP and limits.

``ChannelsHandler`` is a ``gevent.pywsgi.WSGIHandler``: it parses requests and runs the
WSGI application exactly as ``gunicorn -k gevent`` does (the fast path), except that

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
import socket
import time
from typing import Any

from gevent import pywsgi

from .app import ChannelsApplication
from .http import RoutedRequest, request_message
from .websocket import WebSocketConnection

access_log = logging.getLogger("geventchannels.server.access")
error_log = logging.getLogger("geventchannels.server")

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 41\r\nConnection: close\r\n\r\nServer busy: too many open connections.\r\n"
)


def set_nodelay(sock: Any) -> None:
    """Send small responses and frames at once instead of after the peer's delayed ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not TCP (a Unix socket)


def apply_proxy_headers(environ: dict) -> None:
    """PROXY_HEADERS on the fast path: the client address and scheme Django sees are the
    ones the proxy reports (X-Forwarded-For's first address, -Port, -Proto)."""
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded_for:
        environ["REMOTE_ADDR"] = forwarded_for.split(",")[0].strip()
        environ["REMOTE_PORT"] = environ.get("HTTP_X_FORWARDED_PORT", "0").strip() or "0"
    proto = environ.get("HTTP_X_FORWARDED_PROTO", "").strip().lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto


class ChannelsHandler(pywsgi.WSGIHandler):
    _admitted = True
    _routed: RoutedRequest | None = None

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None):
        set_nodelay(sock)
        super().__init__(sock, address, server, rfile)

    def _find_app(self) -> ChannelsApplication | None:
        return getattr(self.server, "channels_app", None) or ChannelsApplication.current

    @property
    def channels_app(self) -> ChannelsApplication:
        app = self._find_app()
        if app is None:
            raise RuntimeError(
                "ChannelsHandler has no ChannelsApplication: set server.channels_app, or "
                "start() a ChannelsApplication before the server accepts connections"
            )
        return app

    def handle(self) -> None:
        app = self.channels_app
        self._admitted = app.connection_opened()
        try:
            super().handle()
        finally:
            app.connection_closed()

    def handle_one_response(self) -> None:
        app = self.channels_app
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
        if app.http_routed:
            message = request_message(self, app)
            if app.router.match_content("http.request", message) is not None:
                self._routed = RoutedRequest(app, self, message)
        app.request_started()
        try:
            super().handle_one_response()
        finally:
            self._routed = None
            app.request_finished()

    def get_environ(self) -> dict:
        environ = super().get_environ()
        app = self._find_app()
        if app is not None and app.config.proxy_headers:
            apply_proxy_headers(environ)
        return environ

    def _wants_websocket(self) -> bool:
        upgrade = self.headers.get("Upgrade")
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

    def log_request(self) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        address = self.client_address
        peer = "{}:{}".format(*address[:2]) if isinstance(address, tuple) else str(address)
        duration = (self.time_finish or time.time()) - self.time_start
        code = self.code if self.code is not None else (self.status or "-")
        access_log.info(
            "HTTP %s %s %s [%.2f, %s]", self.command, self.path, code, duration, peer
        )

    def log_error(self, msg: str, *args: Any) -> None:
        error_log.warning(msg, *args)


class ChannelsWSGIServer(pywsgi.WSGIServer):
    """A pywsgi server whose connections are handled by :class:`ChannelsHandler`.

    ``ChannelsWSGIServer(listener, channels_app)`` serves ``channels_app.wsgi_app``; the
    pywsgi signature ``(listener, wsgi_application, channels_app=app, ...)`` works too.
    """

    handler_class = ChannelsHandler

    def __init__(self, listener: Any, application: Any = None, *,
                 channels_app: ChannelsApplication | None = None, **kwargs: Any):
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
