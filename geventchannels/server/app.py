"""The server's application object: one per process, shared by all its connections.

It owns the channel layer side of the server: a process-local reply prefix whose
messages are delivered straight to the connection or parked request they are for, the
consumer pool (Worker), connection counting, the keepalive sweeper and graceful stop.
The listener (``ChannelsWSGIServer`` or gunicorn's) feeds it sockets via ``ChannelsHandler``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from ..exceptions import ChannelFull
from .body import BodyWaits
from .config import ServerConfig
from .heads import WaitingHeads
from .interfaces import Endpoint, TrackedSocket

if TYPE_CHECKING:
    from ..worker import Worker

logger = logging.getLogger("geventchannels.server")


def _one_socket(error: ChannelFull) -> bool:
    from ..worker import SocketBacklogFull

    return isinstance(error, SocketBacklogFull)


class ChannelsApplication:
    """Serves a WSGI application (Django's) plus channels: HTTP fast path, routed
    ``http.request``, WebSockets, and the consumers.

    ``channel_layer_wrapper`` is ``channel_layers[alias]`` (default: the "default" alias).
    Settings come from GEVENTCHANNELS, with ``overrides`` (``{"HTTP_TIMEOUT": 5}``) or a
    ready ``config`` winning. With ``run_worker=False`` no consumers run here (another
    process runs ``runworker``).
    """

    #: The application started first in this process; handlers of a server that was not
    #: given one (``server.channels_app``) use it.
    current: ChannelsApplication | None = None

    def __init__(
        self,
        wsgi_app: Callable | None = None,
        channel_layer_wrapper: Any = None,
        *,
        config: ServerConfig | None = None,
        overrides: dict[str, Any] | None = None,
        run_worker: bool = True,
        worker_concurrency: int | None = None,
    ):
        if wsgi_app is None:
            from django.core.wsgi import get_wsgi_application

            wsgi_app = get_wsgi_application()
        if channel_layer_wrapper is None:
            from .. import DEFAULT_CHANNEL_LAYER
            from ..asgi import channel_layers

            channel_layer_wrapper = channel_layers[DEFAULT_CHANNEL_LAYER]
        self.wsgi_app = wsgi_app
        self.wrapper = channel_layer_wrapper
        self.layer = channel_layer_wrapper.channel_layer
        self.router = channel_layer_wrapper.router
        self.overrides = dict(overrides or {})
        self.config = config or ServerConfig.from_settings(overrides)
        self.run_worker = run_worker
        self.worker_concurrency = worker_concurrency
        self.worker: Worker | None = None
        #: True when some route consumes http.request: only then is a request's message
        #: built to see whether a route claims it.
        self.http_routed = "http.request" in self.router.channels
        self.reply_prefix = f"gc.{secrets.token_hex(6)}!"
        self._endpoints: dict[str, Endpoint] = {}
        self._websockets: dict[TrackedSocket, None] = {}
        self.connections = 0
        #: HTTP connections blocked reading a request head (deadlines, eviction).
        self.waiting_heads = WaitingHeads(
            min(self.config.http_head_timeout, self.config.http_keepalive_timeout)
        )
        #: HTTP request bodies blocked reading from their client (deadlines).
        self.waiting_bodies = BodyWaits(
            self.config.http_body_timeout, self.config.http_body_min_rate
        )
        self.requests_in_flight = 0
        self.started = False
        self.stopping = False
        self._idle = Event()
        self._idle.set()
        self._greenlets: list[gevent.Greenlet] = []
        #: One line per full channel of connections waiting for room in it.
        self._room_lines: dict[str, Semaphore] = {}

    # -- life cycle --------------------------------------------------------------

    def start(self) -> None:
        """Attach the reply prefix, start the consumer pool and the keepalive sweeper."""
        if self.started:
            return
        self.started = True
        self.stopping = False
        self.layer.attach_local(self.reply_prefix, self._deliver)
        self.layer.memberships.serve(
            self.reply_prefix, self._endpoints.__contains__, self.overrides
        )
        self._greenlets = [gevent.spawn(self._sweep)]
        if self.run_worker:
            from ..worker import Worker

            worker = self.worker = Worker(
                self.wrapper, concurrency=self.worker_concurrency, overrides=self.overrides
            )
            worker.start()
        if ChannelsApplication.current is None:
            ChannelsApplication.current = self

    def stop(
        self,
        grace: float | None = None,
        close_code: int = 1001,
        keepalive_grace: float | None = None,
    ) -> None:
        """Close WebSockets with ``close_code`` (1001 going away, 1012 service restart),
        wait up to ``grace`` seconds (GRACEFUL_TIMEOUT) for them and every open HTTP
        connection (a request in any phase; an idle keep-alive one until its timeout, or
        for ``keepalive_grace`` seconds at most: 0 closes idle ones at once), then stop
        the consumers. Stopping the listener is the caller's job."""
        if not self.started:
            return
        if grace is None:
            grace = self.config.graceful_timeout
        deadline = time.monotonic() + grace
        self.stopping = True
        if keepalive_grace is not None:
            self.waiting_heads.hurry_idle(time.monotonic() + keepalive_grace)
        for connection in list(self._websockets):
            connection.close(close_code)
        self._idle.wait(max(0.0, deadline - time.monotonic()))
        for connection in list(self._websockets):
            connection.abort()
        if self.worker is not None:
            self.worker.stop(timeout=max(0.0, deadline - time.monotonic()))
            self.worker = None
        self.started = False
        gevent.killall(self._greenlets, block=True, timeout=1)
        self._greenlets = []
        self.layer.memberships.release(self.reply_prefix)
        self.layer.detach_local(self.reply_prefix)
        if ChannelsApplication.current is self:
            ChannelsApplication.current = None

    # -- connections and requests -------------------------------------------------

    def connection_opened(self) -> bool:
        """Count a new socket; False when it is over MAX_CONNECTIONS (answer 503)."""
        self.connections += 1
        self._idle.clear()
        return self.connections <= self.config.max_connections

    def connection_closed(self) -> None:
        self.connections -= 1
        self._check_idle()

    def request_started(self) -> None:
        self.requests_in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.requests_in_flight -= 1
        self._check_idle()

    def track_websocket(self, connection: TrackedSocket) -> None:
        self._websockets[connection] = None
        self._idle.clear()

    def untrack_websocket(self, connection: TrackedSocket) -> None:
        self._websockets.pop(connection, None)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self.requests_in_flight and not self._websockets and not self.connections:
            self._idle.set()

    @property
    def websocket_count(self) -> int:
        return len(self._websockets)

    # -- messages the server builds ---------------------------------------------------

    def send_now(self, channel: str, message: dict) -> None:
        """Send a message the server built for one of its sockets (and never touches
        again): straight to this process's consumer pool when it consumes ``channel``
        (local first), else through the layer. Raises ChannelFull and MessageTooLarge
        either way, and ChannelLayerUnavailable when the layer cannot be reached."""
        worker = self.worker
        if worker is not None and worker.takes(channel):
            worker.offer(channel, message)
        else:
            self.layer.send_owned(channel, message)

    def send_when_room(self, channel: str, message: dict, patience: float) -> bool:
        """``send_now``; when ``channel`` is full, wait up to ``patience`` seconds for room.
        False if it stayed full.

        Connections waiting for the same channel queue up in arrival order and only the
        first of the line polls, with a growing pause, so a burst of waiters costs no
        spinning; a newcomer joins the line rather than jumping it. A socket whose own
        messages fill its share of the consumer pool (SocketBacklogFull) waits alone,
        without holding up the line of other sockets.
        """
        send = self.send_now
        line = self._room_lines.get(channel)
        if line is None or not line.locked():
            try:
                send(channel, message)
                return True
            except ChannelFull as error:
                if patience <= 0:
                    return False
                if _one_socket(error):
                    return self._poll_for_room(channel, message, time.monotonic() + patience)
            line = self._room_lines.get(channel)
            if line is None:
                line = self._room_lines[channel] = Semaphore()
        deadline = time.monotonic() + patience
        if not line.acquire(timeout=patience):
            return False
        try:
            return self._poll_for_room(channel, message, deadline)
        finally:
            line.release()

    def withdraw(self, message: dict) -> bool:
        """Take back a message ``send_now`` offered this process's consumer pool if no
        consumer took it yet (True), so that it never runs: a handshake given up on."""
        worker = self.worker
        return worker is not None and worker.withdraw(message)

    def _poll_for_room(self, channel: str, message: dict, deadline: float) -> bool:
        pause = 0.001
        while True:
            try:
                self.send_now(channel, message)
                return True
            except ChannelFull:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            gevent.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.01)

    # -- reply channels -----------------------------------------------------------

    def register_endpoint(self, endpoint: Endpoint, kind: str) -> str:
        """A new reply channel whose messages go to ``endpoint.deliver(message)``. Its name
        is a capability (whoever knows it writes to the socket): 128 random bits each."""
        name = f"{self.reply_prefix}{kind}{secrets.token_urlsafe(16)}"
        self._endpoints[name] = endpoint
        return name

    def unregister_endpoint(self, name: str) -> None:
        self._endpoints.pop(name, None)
        self.layer.memberships.closed(name)  # its groups and presences go with it

    def _deliver(self, channel: str, message: dict) -> None:
        endpoint = self._endpoints.get(channel)
        if endpoint is not None:
            endpoint.deliver(message)

    def _sweep(self) -> None:
        """One greenlet checks every WebSocket's keepalive and closing deadline, so an
        idle connection costs no timer of its own."""
        config = self.config
        interval = float(config.websocket_ping_interval or 0)
        timeout = float(config.websocket_ping_timeout or 0) or 20.0
        tick = min(interval or 1.0, timeout) / 4
        tick = min(max(tick, 0.05), 1.0)
        while self.started:
            gevent.sleep(tick)
            now = time.monotonic()
            for connection in list(self._websockets):
                try:
                    connection.check_keepalive(now, interval, timeout)
                except Exception:
                    logger.exception("keepalive check of %s failed", connection.reply_channel)
