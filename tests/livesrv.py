"""Run the real geventchannels server in-process for a test: ``live_server(routing)``.

::

    with live_server([route("websocket.receive", echo)], HTTP_TIMEOUT=2) as server:
        ws = websocket.create_connection(server.ws_url + "/chat/")

The server listens on 127.0.0.1 at a free port, in this process's gevent hub, with the
given channel routing (a list of route()s or a dict), a fresh InMemoryChannelLayer (unless
``layer`` is given) and its consumer Worker running. Keyword arguments are GEVENTCHANNELS
settings overrides (``WEBSOCKET_PING_INTERVAL=0.2``). While it runs, the layer is also
``channel_layers["default"]``, so ``Channel(name)`` and ``Group(name)`` in consumers reach it. Blocking clients must run in real
threads (``gevent.threadpool``/``run_in_thread``) or be gevent-patched (the suite runs
under ``python -m gevent.monkey``, so plain sockets are cooperative).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from gevent.event import Event

from geventchannels.asgi import ChannelLayerWrapper, channel_layers
from geventchannels.server import ChannelsApplication, ChannelsWSGIServer


class LiveServer:
    def __init__(self, app: ChannelsApplication, server: ChannelsWSGIServer, tls: bool = False):
        self.app = app
        self.server = server
        self.host = "127.0.0.1"
        self.port = server.server_port
        self.tls = tls

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}"

    @property
    def layer(self):
        return self.app.layer


@contextlib.contextmanager
def live_server(
    routing: Any = (),
    *,
    layer: Any = None,
    wsgi_app: Any = None,
    run_worker: bool = True,
    worker_concurrency: int | None = 20,
    ssl_context: Any = None,
    **settings_overrides: Any,
) -> Iterator[LiveServer]:
    """Start the server, yield a :class:`LiveServer`, stop it (WebSockets get 1001).
    With ``ssl_context`` it speaks TLS (https://, wss://)."""
    if layer is None:
        from geventchannels.layers.inmemory import InMemoryChannelLayer

        layer = InMemoryChannelLayer()
    if wsgi_app is None:
        from django.core.wsgi import get_wsgi_application

        wsgi_app = get_wsgi_application()
    wrapper = ChannelLayerWrapper(
        layer, "default", list(routing) if isinstance(routing, tuple) else routing
    )
    app = ChannelsApplication(
        wsgi_app,
        wrapper,
        overrides=settings_overrides,
        run_worker=run_worker,
        worker_concurrency=worker_concurrency,
    )
    tls = {"ssl_context": ssl_context} if ssl_context is not None else {}
    server = ChannelsWSGIServer(("127.0.0.1", 0), app, **tls)
    # Channel("name") / Group("name") in consumers use the "default" alias: make it ours.
    previous = channel_layers.set("default", wrapper)
    app.start()
    server.start()
    try:
        yield LiveServer(app, server, tls=ssl_context is not None)
    finally:
        server.close()
        try:
            app.stop(2.0)
            server.stop(timeout=1)
        finally:
            channel_layers.set("default", previous)
            layer.close()


class Recorder:
    """A consumer that keeps what it receives, and a way to wait for it::

    seen = Recorder()
    route("websocket.disconnect", seen)
    ...
    seen.wait_for(lambda m: m["code"] == 4001)
    """

    def __init__(self, reply: dict | None = None):
        self.messages: list[dict] = []
        self.reply = reply
        self._arrived = Event()

    def __call__(self, message: Any, **kwargs: Any) -> None:
        self.messages.append(dict(message.content))
        if self.reply is not None:
            message.reply_channel.send(dict(self.reply))
        self._arrived.set()

    def wait_for(self, predicate: Any = None, timeout: float = 5.0) -> dict:
        """The first message matching ``predicate`` (any message when None); fails
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if predicate is None or predicate(message):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no matching message within {timeout:.1f} s; got {self.messages!r}"
                )
            self._arrived.clear()
            self._arrived.wait(remaining)

    def wait_count(self, count: int, timeout: float = 5.0) -> list[dict]:
        """Wait until at least ``count`` messages arrived; returns them all."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{len(self.messages)} of {count} messages within {timeout:.1f} s"
                )
            self._arrived.clear()
            self._arrived.wait(remaining)
        return self.messages
