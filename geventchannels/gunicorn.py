"""The gunicorn worker class: ``gunicorn -k geventchannels.gunicorn.Worker proj.wsgi``.

It is gunicorn's gevent pywsgi worker with the geventchannels server inside: each worker
process patches gevent before the project is imported, starts its own
ChannelsApplication (so consumers run in every worker), and serves WebSocket upgrades and
routed HTTP with ChannelsHandler next to the project's normal WSGI application.

Life cycle, as gunicorn defines it:

- TERM: stop accepting, close WebSockets with 1001, let every open HTTP connection finish
  within gunicorn's ``--graceful-timeout`` (a head still arriving, an upload, a request
  sent meanwhile on a keep-alive connection: each is served, with ``Connection: close``;
  an idle keep-alive connection is closed at its HTTP_KEEPALIVE_TIMEOUT), let the
  consumers finish, exit;
- HUP (reload): gunicorn starts new workers and sends TERM to the old ones, which close
  their WebSockets with 1012 (service restart) instead, so clients reconnect at once;
- ``--max-requests``: counted on HTTP requests (gunicorn's pywsgi worker does not), the
  worker then leaves like on a reload (1012);
- QUIT / INT (gunicorn's quick shutdown, e.g. Ctrl-C): WebSockets still get a 1001 close
  frame, nothing waits;
- ``--worker-connections`` is the worker's MAX_CONNECTIONS: above it a new client takes the
  slot of a connection waiting for a request head, or gets 503 at once (never a hang in
  the listen backlog);
- the heartbeat to the arbiter keeps beating while only WebSockets are open or while the
  worker stops, so ``--timeout`` only catches a blocked worker.

Several workers only share messages through a shared channel layer (Redis): with the
in-memory layer each worker logs a warning at start-up.
"""

from __future__ import annotations

import mmap
import struct
import sys
from typing import Any

import gevent
from gevent.pool import Pool
from gunicorn.arbiter import Arbiter
from gunicorn.http.wsgi import base_environ
from gunicorn.sock import ssl_context
from gunicorn.workers.base import Worker as BaseWorker
from gunicorn.workers.ggevent import VERSION, GeventPyWSGIWorker, PyWSGIHandler

from .runner import GOING_AWAY, SERVICE_RESTART

#: Arbiter configurations loaded so far (start + one per HUP), in memory shared with the
#: forked workers: a worker told to stop after the count moved on is being replaced.
_generations: mmap.mmap | None = None
_COUNTER = struct.Struct("Q")


def _generation() -> int:
    return _COUNTER.unpack_from(_generations, 0)[0] if _generations is not None else 0


def _handler_class():
    """ChannelsHandler with gunicorn's access log (``--access-logfile``, ``--access-logformat``)
    and environ keys."""
    from .server import ChannelsHandler

    class GunicornChannelsHandler(ChannelsHandler, PyWSGIHandler):
        def get_environ(self) -> dict:
            # ChannelsHandler builds the environ itself: add what PyWSGIHandler adds.
            environ = ChannelsHandler.get_environ(self)
            environ["gunicorn.sock"] = self.socket
            environ["RAW_URI"] = self.path
            return environ

        def log_request(self) -> None:
            # gunicorn's line costs two datetimes and a response object per request even
            # when it is thrown away: only build it when the access log is on.
            if _access_log_enabled(self.server.log):
                PyWSGIHandler.log_request(self)

    return GunicornChannelsHandler


def _access_log_enabled(log) -> bool:
    enabled = getattr(log, "access_log_enabled", None)
    if enabled is None:  # an older gunicorn: its access() decides
        return True
    return bool(enabled)


class Worker(GeventPyWSGIWorker):
    """A gunicorn gevent worker serving HTTP, WebSockets and consumers."""

    channels_app: Any = None
    # Set by gunicorn's base worker (untyped there).
    sockets: list[Any]
    wsgi: Any
    alive: bool

    @classmethod
    def setup(cls) -> None:
        # Called by the arbiter each time it loads its configuration: once at start and
        # once per HUP, always before it forks the workers of that configuration.
        global _generations
        if _generations is None:
            _generations = mmap.mmap(-1, _COUNTER.size)
        _COUNTER.pack_into(_generations, 0, _generation() + 1)

    @classmethod
    def check_config(cls, cfg, log) -> None:
        if cfg.preload_app:
            log.error(
                "geventchannels.gunicorn.Worker cannot run with --preload (preload_app): the "
                "project would be imported before gevent patches the worker. Remove it."
            )
            sys.exit(1)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation = _generation()

    def patch(self) -> None:
        from gevent import socket

        from .monkey import patch

        patch()
        self.sockets = [
            socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.detach())
            for s in self.sockets
        ]

    def load_wsgi(self) -> None:
        """Load the project, run the start-up checks, then build this worker's
        ChannelsApplication: a broken configuration stops gunicorn with one line per
        problem instead of respawning workers that fail the same way."""
        super().load_wsgi()
        if self.cfg.max_requests > 0:
            self.wsgi = self._count_requests(self.wsgi)
        self.route_logs()
        from django.core.exceptions import ImproperlyConfigured

        from .checks import expect_serving, startup_report

        expect_serving()
        errors, warnings = startup_report()
        for warning in warnings:
            self.log.warning("geventchannels: %s", warning)
        for error in errors:
            self.log.error("geventchannels cannot start: %s", error)
        if errors:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        try:
            self.channels_app = self.make_channels_app()
        except (ImproperlyConfigured, ImportError, SyntaxError, ValueError, TypeError) as error:
            self.log.error("geventchannels cannot start: %s", error)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def route_logs(self) -> None:
        """Send geventchannels' log lines (consumer errors, the pool's start-up line) to
        gunicorn's error log, unless the project's LOGGING already routes them."""
        import logging

        logger = logging.getLogger("geventchannels")
        if logger.handlers or logging.getLogger().handlers:
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.INFO)
            return
        error_log = getattr(self.log, "error_log", None)
        if error_log is None:
            return
        for handler in error_log.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def _count_requests(self, application):
        """gunicorn's pywsgi worker does not count requests for --max-requests; this does."""

        def counted(environ, start_response):
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            return application(environ, start_response)

        return counted

    def close_code(self) -> int:
        """1012 when this worker is being replaced (HUP, max-requests), else 1001."""
        if self.nr >= self.max_requests or _generation() != self.generation:
            return SERVICE_RESTART
        return GOING_AWAY

    def make_channels_app(self):
        from .server import ChannelsApplication

        # gunicorn's --worker-connections is the process's MAX_CONNECTIONS: counted by the
        # application (which answers 503 above it) rather than by a bounded pool, whose
        # accept loop would stop and leave new clients hanging in the listen backlog.
        app = ChannelsApplication(self.wsgi, overrides={"MAX_CONNECTIONS": self.worker_connections})
        if self.cfg.workers > 1 and not app.layer.crosses_processes:
            self.log.warning(
                "geventchannels: %d gunicorn workers share the in-memory channel layer, which "
                "lives inside one process: Group and Channel messages will not cross "
                "workers. Configure geventchannels.layers.RedisChannelLayer in "
                "CHANNEL_LAYERS, or run one worker.",
                self.cfg.workers,
            )
        return app

    def run(self) -> None:
        from .server import ChannelsWSGIServer

        self.channels_app.start()
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        handler_class = _handler_class()
        servers = []
        for listener in self.sockets:
            listener.setblocking(1)
            environ = base_environ(self.cfg)
            environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": VERSION})
            server = ChannelsWSGIServer(
                listener,
                self.wsgi,
                channels_app=self.channels_app,
                spawn=Pool(),
                log=self.log,
                handler_class=handler_class,
                environ=environ,
                **ssl_args,
            )
            server.start()
            servers.append(server)

        while self.alive:
            self.notify()
            gevent.sleep(1.0)
        self.stop_gracefully(servers)

    def handle_quit(self, sig, frame) -> None:
        gevent.spawn(self.quit_now, sig, frame)

    def quit_now(self, sig, frame) -> None:
        """Quick shutdown: tell the WebSockets (1001) without waiting, then leave as
        gunicorn does."""
        self.alive = False
        if self.channels_app is not None:
            try:
                self.channels_app.stop(0, GOING_AWAY)
            except Exception:
                self.log.exception("closing WebSockets on quick shutdown failed")
        BaseWorker.handle_quit(self, sig, frame)

    def stop_gracefully(self, servers) -> None:
        """Stop accepting, close WebSockets, give in-flight work gunicorn's graceful
        timeout (less a second, to leave before the arbiter kills us), beating the
        heartbeat meanwhile."""
        close_code = self.close_code()
        for server in servers:
            server.close()
        grace = max(float(self.cfg.graceful_timeout) - 1.0, 0.0)
        stopper = gevent.spawn(self.channels_app.stop, grace, close_code)
        while not stopper.dead:
            self.notify()
            stopper.join(timeout=1.0)
        for server in servers:
            server.stop(timeout=0.1)
