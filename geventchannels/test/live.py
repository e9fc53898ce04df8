"""The real server in the test's own process, on a free port of 127.0.0.1.

::

    with live_server([route("websocket.receive", echo)]) as server:
        ws = websocket.create_connection(server.ws_url + "/chat/")

The server runs in this process's gevent hub with its consumer pool, so the test's
database, settings overrides and in-memory layer are the server's too. The process must be
gevent-patched (``python -m gevent.monkey --module pytest``, or the pytest plugin's
``geventchannels_patch`` option) so that blocking clients in the test let the server run.

A consumer that raises while the server runs is not only logged: the error is raised in
the greenlet that started the server (the test) where it waits, with the consumer's
traceback, so the test fails at once instead of waiting for a reply that never comes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.test.testcases import TransactionTestCase
from django.test.utils import modify_settings
from django.utils.functional import classproperty
from gevent import getcurrent

from .. import DEFAULT_CHANNEL_LAYER
from ..asgi import ChannelLayerWrapper, channel_layers
from .base import AfterPreSetup

#: Where the consumer pool logs a consumer's error (with its traceback).
WORKER_LOGGER = "geventchannels.worker"


class ConsumerError(Exception):
    """A consumer raised while a live server ran; the message has its traceback and
    ``__cause__`` is the consumer's exception."""


class ConsumerErrors(logging.Handler):
    """Collects the consumer pool's errors and raises the first in ``target``."""

    def __init__(self, target: Any) -> None:
        super().__init__(logging.ERROR)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.target = target
        self.errors: list[ConsumerError] = []
        self.armed = True
        self.raised = False

    def emit(self, record: logging.LogRecord) -> None:
        if not record.exc_info or record.exc_info[1] is None:
            return
        error = ConsumerError(self.format(record))
        error.__cause__ = record.exc_info[1]
        self.errors.append(error)
        if self.armed and self.target is not getcurrent():
            from gevent import get_hub

            get_hub().loop.run_callback(self._raise_in_target, error)

    def _raise_in_target(self, error: ConsumerError) -> None:
        # As gevent.Timeout does: the target is parked in the hub, waiting on something.
        if self.armed and not self.raised and not self.target.dead:
            self.raised = True
            self.target.throw(error)

    def rearm(self, target: Any) -> None:
        """Start over for a new test run by ``target``."""
        self.target = target
        self.errors.clear()
        self.armed = True
        self.raised = False

    def check(self) -> None:
        """Raise the first error that was not raised in the target yet."""
        self.armed = False
        if self.errors and not self.raised:
            self.raised = True
            raise self.errors[0]


class LiveServer:
    """A started server: ``url``, ``ws_url``, ``layer``; :meth:`stop` ends it (open
    WebSockets get 1001)."""

    def __init__(
        self,
        routing: Any = None,
        *,
        host: str = "127.0.0.1",
        layer: Any = None,
        alias: str = DEFAULT_CHANNEL_LAYER,
        wsgi_app: Any = None,
        serve_static: bool = False,
        run_worker: bool = True,
        worker_concurrency: int | None = 20,
        raise_consumer_errors: bool = True,
        **settings_overrides: Any,
    ) -> None:
        from ..server import ChannelsApplication, ChannelsWSGIServer

        if routing is None:
            routing = channel_layers.configs[alias].get("ROUTING") or []
        elif isinstance(routing, tuple):
            routing = list(routing)
        if layer is None:
            from ..layers.inmemory import InMemoryChannelLayer

            layer = InMemoryChannelLayer()
        self.wrapper = ChannelLayerWrapper(layer, alias, routing)
        self.app = ChannelsApplication(
            wsgi_app or project_wsgi_app(serve_static),
            self.wrapper,
            overrides=settings_overrides,
            run_worker=run_worker,
            worker_concurrency=worker_concurrency,
        )
        self.host = host
        self.server = ChannelsWSGIServer((host, 0), self.app)
        self.errors = ConsumerErrors(getcurrent()) if raise_consumer_errors else None
        self._previous: ChannelLayerWrapper | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def layer(self) -> Any:
        return self.app.layer

    def start(self) -> LiveServer:
        # Channel(name) and Group(name) in consumers and in the test reach this layer.
        self._previous = channel_layers.set(self.wrapper.alias, self.wrapper)
        if self.errors is not None:
            logging.getLogger(WORKER_LOGGER).addHandler(self.errors)
        self.app.start()
        self.server.start()
        self.port = self.server.server_port
        return self

    def stop(self) -> None:
        """Stop serving; then raise a consumer error the test has not seen yet."""
        if self.errors is not None:
            self.errors.armed = False
        self.server.close()
        try:
            self.app.stop(2.0, keepalive_grace=0)
            self.server.stop(timeout=1)
        finally:
            channel_layers.set(self.wrapper.alias, self._previous)
            self.layer.close()
            if self.errors is not None:
                logging.getLogger(WORKER_LOGGER).removeHandler(self.errors)
                self.errors.check()


@contextlib.contextmanager
def live_server(routing: Any = None, **options: Any) -> Iterator[LiveServer]:
    """Start a :class:`LiveServer` (``routing`` None: the project's), yield it, stop it.
    Options are LiveServer's: ``layer``, ``alias``, ``serve_static``, ``run_worker``,
    ``raise_consumer_errors``, and GEVENTCHANNELS settings such as ``HTTP_TIMEOUT=2``."""
    server = LiveServer(routing, **options).start()
    try:
        yield server
    finally:
        server.stop()


def project_wsgi_app(serve_static: bool) -> Any:
    """Django's WSGI handler, serving static files (from the finders, as runserver does)
    when ``serve_static`` and staticfiles is installed."""
    from django.apps import apps
    from django.core.wsgi import get_wsgi_application

    handler = get_wsgi_application()
    if serve_static and apps.is_installed("django.contrib.staticfiles"):
        from django.contrib.staticfiles.handlers import StaticFilesHandler

        return StaticFilesHandler(handler)
    return handler


def project_layer(alias: str = DEFAULT_CHANNEL_LAYER, in_memory: bool = False) -> Any:
    """The layer a live test server uses: the project's backend built with TEST_CONFIG
    (flushed), or a fresh in-memory layer."""
    if in_memory or alias not in channel_layers.configs:
        from ..layers.inmemory import InMemoryChannelLayer

        return InMemoryChannelLayer()
    layer = channel_layers.make_test_backend(alias).channel_layer
    if "flush" in layer.extensions:
        layer.flush()
    return layer


def require_patched() -> None:
    from ..monkey import is_patched

    if not is_patched():
        raise ImproperlyConfigured(
            "a live test server needs a gevent-patched process: run the tests with "
            "`python -m gevent.monkey --module pytest` (or manage.py test through "
            "`python -m geventchannels.management.bootstrap manage.py test`), or set "
            "`geventchannels_patch = true` in the pytest configuration"
        )


class ChannelLiveServerTestCase(AfterPreSetup, TransactionTestCase):
    """A TransactionTestCase with the project's server running in this process for the
    whole class: ``live_server_url`` (http) and ``live_server_ws_url`` (ws), static files
    served, the same test database. Each test starts with a flushed channel layer; a
    consumer error fails the test that was running.

    The layer is the project's backend built with TEST_CONFIG (set
    ``in_memory_layer = True`` for a fresh in-memory one); ``server_settings`` are
    GEVENTCHANNELS overrides.
    """

    host = "127.0.0.1"
    serve_static = True
    in_memory_layer = False
    channel_layer_alias = DEFAULT_CHANNEL_LAYER
    raise_consumer_errors = True
    server_settings: dict[str, Any] = {}
    _live_server: LiveServer | None = None

    @classproperty
    def live_server_url(cls) -> str:
        return cls._running().url

    @classproperty
    def live_server_ws_url(cls) -> str:
        return cls._running().ws_url

    @classmethod
    def _running(cls) -> LiveServer:
        if cls._live_server is None:
            raise RuntimeError(f"{cls.__name__}'s live server runs only during its tests")
        return cls._live_server

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        require_patched()
        # As Django's LiveServerTestCase does: the server's own host is allowed, so that
        # HTTP and the WebSocket Host and Origin checks accept the test's clients.
        allowed = modify_settings(ALLOWED_HOSTS={"append": cls.host})
        allowed.enable()
        cls.addClassCleanup(allowed.disable)
        server = LiveServer(
            layer=project_layer(cls.channel_layer_alias, cls.in_memory_layer),
            alias=cls.channel_layer_alias,
            host=cls.host,
            serve_static=cls.serve_static,
            raise_consumer_errors=cls.raise_consumer_errors,
            **cls.server_settings,
        )
        cls._live_server = server.start()
        cls.addClassCleanup(cls._stop_live_server)

    @classmethod
    def _stop_live_server(cls) -> None:
        server, cls._live_server = cls._live_server, None
        if server is not None:
            if server.errors is not None:
                server.errors.raised = True  # each was reported by its own test
            server.stop()

    @classmethod
    def _after_pre_setup(cls) -> None:
        """A flushed layer for each test, and its consumer errors raised in it (the
        first test's server is new: it is started after Django's own set-up)."""
        server = cls._live_server
        if server is not None:
            if "flush" in server.layer.extensions:
                server.layer.flush()
            if server.errors is not None:
                server.errors.rearm(getcurrent())

    def _post_teardown(self) -> None:
        server = self._live_server
        try:
            if server is not None and server.errors is not None:
                server.errors.check()
        finally:
            super()._post_teardown()  # type: ignore[misc]


__all__ = [
    "ChannelLiveServerTestCase",
    "ConsumerError",
    "LiveServer",
    "live_server",
    "project_layer",
    "project_wsgi_app",
]
