"""Serve a WSGI application with geventchannels in this process until told to stop.

Shared by ``manage.py runserver`` and the ``geventchannels serve`` console command (the
gunicorn worker has gunicorn's own loop): bind the listening socket with errors a user can
act on, start the consumer pool and the server, wait for SIGTERM / SIGINT (or
:meth:`Runner.request_stop`), then stop gracefully: stop accepting, close WebSockets with
1001 (1012 when restarting), let in-flight HTTP and running consumers finish within
GRACEFUL_TIMEOUT.

The process must already be gevent-patched; nothing here patches.
"""

from __future__ import annotations

import errno
import logging
import re
import signal
import socket
import ssl
from collections.abc import Callable
from typing import Any

import gevent
import gevent.ssl
from gevent.event import Event

#: WebSocket close codes used on stop (RFC 6455 section 7.4.1).
GOING_AWAY = 1001
SERVICE_RESTART = 1012

_ADDRESS_RE = re.compile(r"^(?:(?P<host>\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.\-]+|\*)?:)?(?P<port>\d+)$")


class AddressError(ValueError):
    """An address to listen on that cannot be used; the message says why and what to do."""


def parse_bind(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"8000"``, ``":8000"``, ``"127.0.0.1:8000"``, ``"localhost:8000"``,
    ``"0.0.0.0:8000"``, ``"[::1]:8000"`` -> ``(host, port)``; IPv6 hosts without brackets."""
    match = _ADDRESS_RE.match(text.strip())
    if match is None:
        raise AddressError(
            f"{text!r} is not an address to listen on: use PORT, HOST:PORT or [IPV6]:PORT, "
            "e.g. 127.0.0.1:8000"
        )
    host = match["host"] or default_host
    if host == "*":
        host = "0.0.0.0"
    if host.startswith("["):
        host = host[1:-1]
    port = int(match["port"])
    if not 0 <= port <= 65535:
        raise AddressError(f"port {port} is out of range: use 1 to 65535 (0 picks a free one)")
    return host, port


_BIND_ERRORS = {
    errno.EADDRINUSE: "%s is already in use: stop the program listening there or pick another port",
    errno.EACCES: "no permission to listen on %s: ports below 1024 need root; pick a higher port",
    errno.EADDRNOTAVAIL: "cannot listen on %s: that IP address is not one of this machine's",
}


def bind(host: str, port: int, ipv6: bool | None = None, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on host:port. ``ipv6=None`` decides from the host. Raises
    AddressError with a message for the user when the address cannot be used."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if ipv6 is None:
        ipv6 = ":" in host
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise AddressError(
            f"cannot listen on {shown}: the host name does not resolve to an "
            f"IPv{6 if ipv6 else 4} address ({error.strerror})"
        ) from None
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(backlog)
    except OSError as error:
        listener.close()
        template = _BIND_ERRORS.get(error.errno or 0)
        if template is None:
            raise AddressError(f"cannot listen on {shown}: {error.strerror or error}") from None
        raise AddressError(template % shown) from None
    return listener


def check_bindable(host: str, port: int, ipv6: bool | None = None) -> None:
    """Raise AddressError now if host:port cannot be listened on (checked before a
    child process is started so the user sees one clear message)."""
    if port == 0:
        return
    bind(host, port, ipv6, backlog=1).close()


class TLSFilesError(ValueError):
    """A certificate or key file that cannot be used; the message says why."""


def tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server TLS context with the certificate chain in ``certfile`` (PEM) and its
    private key (in ``keyfile``, or in ``certfile`` too). Raises TLSFilesError with a
    message for the user when they cannot be loaded."""
    context = gevent.ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        files = f"{certfile} and {keyfile}" if keyfile else certfile
        raise TLSFilesError(
            f"cannot serve TLS with {files}: {getattr(error, 'strerror', None) or error} "
            "(give a PEM certificate chain and its private key)"
        ) from None
    return context


class Runner:
    """One geventchannels server in this process: a ChannelsApplication (consumer pool)
    and a ChannelsWSGIServer on ``listener``, speaking TLS when given ``ssl_context``
    (see :func:`tls_context`)."""

    def __init__(
        self,
        wsgi_app: Callable,
        listener: socket.socket,
        *,
        overrides: dict[str, Any] | None = None,
        run_worker: bool = True,
        worker_concurrency: int | None = None,
        layer_alias: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        from .server import ChannelsApplication, ChannelsWSGIServer

        wrapper = None
        if layer_alias is not None:
            from .asgi import channel_layers

            wrapper = channel_layers[layer_alias]
        self.app = ChannelsApplication(
            wsgi_app,
            wrapper,
            overrides=overrides,
            run_worker=run_worker,
            worker_concurrency=worker_concurrency,
        )
        #: Seconds in-flight requests and consumers get on stop (GRACEFUL_TIMEOUT).
        self.graceful_timeout = float(self.app.config.graceful_timeout)
        tls: dict[str, Any] = {"ssl_context": ssl_context} if ssl_context is not None else {}
        self.server = ChannelsWSGIServer(listener, self.app, **tls)
        self._stop_requested = Event()
        self._forced = Event()
        self._stopped = False
        self._close_code = GOING_AWAY

    @property
    def address(self) -> tuple:
        return self.server.address

    def start(self) -> None:
        self.app.start()
        self.server.start()

    def request_stop(self, close_code: int = GOING_AWAY) -> None:
        """Ask for a graceful stop (callable from a signal handler or any greenlet). A
        second request while stopping gives up waiting for what is still running."""
        if self._stop_requested.is_set():
            self._forced.set()
            return
        self._close_code = close_code
        self._stop_requested.set()

    def serve_until_stopped(
        self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
    ) -> bool:
        """Start, wait for a stop request or one of ``signals``, then stop gracefully.
        Returns False when a second request cut the graceful stop short."""
        handlers = [gevent.signal_handler(signum, self.request_stop) for signum in signals]
        try:
            self.start()
            self._stop_requested.wait()
            stopper = gevent.spawn(self.stop, self._close_code)
            gevent.wait([stopper, self._forced], count=1)
            if stopper.dead:
                stopper.get()
                return True
            stopper.kill(block=False)
            self.server.stop(timeout=0)
            return False
        finally:
            for handler in handlers:
                handler.cancel()

    def stop(self, close_code: int = GOING_AWAY) -> None:
        """Stop accepting, close WebSockets with ``close_code``, give in-flight requests
        and consumers up to GRACEFUL_TIMEOUT, then drop what is left."""
        if self._stopped:
            return
        self._stopped = True
        self.server.close()
        self.app.stop(self.graceful_timeout, close_code=close_code)
        # What still holds a connection now is idle keep-alive: no reason to wait for it.
        self.server.stop(timeout=0.1)


def show_server_logs(level: int = logging.INFO) -> None:
    """Print the server's access and error lines (``[2026/11/21 10:00:00] HTTP GET /x 200
    [0.01, 127.0.0.1:5000]``) on stderr unless the project's LOGGING already routes them."""
    logger = logging.getLogger("geventchannels")
    if logger.handlers or logging.getLogger().handlers:
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%Y/%m/%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
