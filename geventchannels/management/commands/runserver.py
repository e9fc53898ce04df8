"""``manage.py runserver``: HTTP, WebSockets and consumers in one gevent process.

It replaces Django's command (see ``geventchannels.management`` for the INSTALLED_APPS
order) and keeps its interface: the same address forms, autoreload, static files under
DEBUG or ``--insecure``. Patching gevent must happen before Django is imported, which is
before any command runs, so the process that serves is always started afresh through
``geventchannels.management.bootstrap``:

- with autoreload, this process only supervises: it starts the serving child through the
  bootstrap, restarts it when it exits with code 3 (a file changed), and passes SIGTERM on;
- with ``--noreload`` an unpatched process re-executes itself through the bootstrap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.core.management.commands.runserver import Command as DjangoRunserverCommand
from django.db import connections
from django.utils import autoreload

from ... import DEFAULT_CHANNEL_LAYER, conf
from .. import bootstrap

#: Seconds in-flight requests get when a code change restarts the development server.
RELOAD_GRACE = 1.0
#: Exit code of an autoreload child that wants to be restarted (Django's convention).
RELOAD_EXIT_CODE = 3


class Command(DjangoRunserverCommand):
    help = (
        "Starts the geventchannels development server: HTTP, WebSockets and consumers in "
        "one process, with autoreload and static files."
    )
    # Set by Django's runserver from the address argument.
    addr: str
    port: str
    use_ipv6: bool
    _raw_ipv6: bool
    runner: Any

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--nostatic",
            action="store_false",
            dest="use_static_handler",
            help="Do not serve static files at STATIC_URL.",
        )
        parser.add_argument(
            "--insecure",
            action="store_true",
            dest="insecure_serving",
            help="Serve static files even if DEBUG is False.",
        )
        parser.add_argument(
            "--noworker",
            action="store_false",
            dest="run_worker",
            help="Run no consumer pool in this process (consumers run in `runworker` "
            "processes sharing a Redis channel layer).",
        )
        conf.add_arguments(parser, conf.RUNSERVER)

    # -- which process does what ---------------------------------------------

    def run(self, **options):
        self.runner = None
        if options["use_reloader"]:
            if os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true":
                self.require_patched()
                self.run_reloading_child(options)
                return
            self.check_configuration(options)
            raise SystemExit(self.supervise_children())
        if not self.is_patched():
            self.check_configuration(options)
            try:
                bootstrap.reexec_patched()
            except RuntimeError as error:
                raise CommandError(str(error)) from error
        try:
            self.inner_run(None, **options)
        except KeyboardInterrupt:
            pass

    @staticmethod
    def is_patched() -> bool:
        from ...monkey import is_patched

        return is_patched()

    def require_patched(self) -> None:
        if not self.is_patched():
            raise CommandError(
                "this autoreload child is not gevent-patched; start the server with "
                "`python manage.py runserver` (it patches its children) instead of setting "
                f"{autoreload.DJANGO_AUTORELOAD_ENV} yourself"
            )

    def check_configuration(self, options) -> None:
        """Fail in the supervising process with one clear line per problem that a child
        would only find after starting: an unusable address or a broken configuration."""
        from ...runner import AddressError, check_bindable, parse_bind

        try:
            parse_bind(str(self.port))
            check_bindable(self.addr, int(self.port), self.use_ipv6)
        except AddressError as error:
            raise CommandError(str(error)) from error
        self.require_configuration(options)

    @staticmethod
    def require_configuration(options) -> None:
        """The start-up checks (E00x, one line each); with --noworker, refuse a layer that
        cannot reach other processes (no runworker could run the consumers)."""
        from ...checks import NOWORKER, startup_report, unshared_layer_error

        errors, _ = startup_report(DEFAULT_CHANNEL_LAYER)
        if errors:
            raise CommandError("\n".join(errors))
        if not options.get("run_worker", True):
            error = unshared_layer_error(DEFAULT_CHANNEL_LAYER, NOWORKER)
            if error:
                raise CommandError(error)

    # -- the supervising parent ----------------------------------------------

    def supervise_children(self) -> int:
        """Run the serving child until it exits for another reason than a reload; pass
        stop signals on so the child can stop gracefully. Returns the exit code."""
        try:
            arguments = bootstrap.current_arguments()
        except RuntimeError as error:
            raise CommandError(str(error)) from error
        environ = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
        child = None
        stopping = False

        def forward(signum, frame):
            nonlocal stopping
            stopping = True
            if child is not None and child.poll() is None:
                child.send_signal(signum)

        def forward_unless_terminal(signum, frame):
            # Ctrl-C in a terminal already reached the child (same process group).
            nonlocal stopping
            stopping = True
            if not self.in_terminal_foreground():
                forward(signum, frame)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward_unless_terminal)
        while True:
            child = subprocess.Popen(arguments, env=environ, close_fds=False)
            code = child.wait()
            if code != RELOAD_EXIT_CODE or stopping:
                return code if code >= 0 else 128 - code

    @staticmethod
    def in_terminal_foreground() -> bool:
        try:
            return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
        except (OSError, ValueError, AttributeError):
            return False

    # -- the serving child ---------------------------------------------------

    def run_reloading_child(self, options) -> None:
        """Serve in a thread (a greenlet) while Django's reloader watches the files in this
        one; a change makes the reloader exit with code 3 and the parent starts us again."""
        import gevent

        reloader = autoreload.get_reloader()
        self.reloader = reloader
        autoreload.logger.info("Watching for file changes with %s", type(reloader).__name__)
        handlers = [
            gevent.signal_handler(s, self.stop_child) for s in (signal.SIGTERM, signal.SIGINT)
        ]
        try:
            autoreload.start_django(reloader, self.serve_in_child, **options)
        except SystemExit as exit:
            if exit.code == RELOAD_EXIT_CODE and self.runner is not None:
                from ...runner import SERVICE_RESTART

                self.runner.graceful_timeout = min(self.runner.graceful_timeout, RELOAD_GRACE)
                self.runner.stop(SERVICE_RESTART)
            raise
        finally:
            for handler in handlers:
                handler.cancel()

    def stop_child(self) -> None:
        if self.runner is not None:
            self.runner.request_stop()
        else:
            self.reloader.stop()

    def serve_in_child(self, **options) -> None:
        from ...runner import AddressError

        try:
            self.inner_run(None, serve_signals=(), **options)
        except CommandError as error:
            self.stderr.write(f"Error: {error}")
            if isinstance(error.__cause__, AddressError):
                sys.stderr.flush()
                os._exit(1)
            # The module that failed to import is not watched yet: watch the project.
            self.reloader.watch_dir(Path(sys.argv[0]).resolve().parent, "**/*.py")
            self.stderr.write("Waiting for a file change to try again.")
            self.runner = None
            return
        self.reloader.stop()

    # -- serving -------------------------------------------------------------

    def inner_run(self, *args, serve_signals=(signal.SIGTERM, signal.SIGINT), **options):
        autoreload.raise_last_exception()
        if not options["skip_checks"]:
            from ...checks import expect_serving

            expect_serving()
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        for connection in connections.all(initialized_only=True):
            connection.close()
        self.require_configuration(options)
        from ...runner import show_server_logs

        show_server_logs()
        self.runner = self.make_runner(options)
        self.print_banner(options)
        self.runner.serve_until_stopped(serve_signals)
        if options.get("shutdown_message"):
            self.stdout.write(options["shutdown_message"])

    def get_handler(self, *args, **options):
        """Django's WSGI handler, wrapped to serve static files like Django's runserver
        does (staticfiles installed, DEBUG or --insecure, not --nostatic)."""
        handler = super().get_handler(*args, **options)
        if (
            options.get("use_static_handler", True)
            and (settings.DEBUG or options.get("insecure_serving"))
            and apps.is_installed("django.contrib.staticfiles")
        ):
            from django.contrib.staticfiles.handlers import StaticFilesHandler

            return StaticFilesHandler(handler)
        return handler

    def make_runner(self, options):
        from ...runner import AddressError, Runner, bind

        try:
            listener = bind(self.addr, int(self.port), self.use_ipv6)
        except AddressError as error:
            raise CommandError(str(error)) from error
        try:
            return Runner(
                self.get_handler(**options),
                listener,
                overrides=conf.overrides_from(options),
                run_worker=options.get("run_worker", True),
                layer_alias=DEFAULT_CHANNEL_LAYER,
            )
        except (ImproperlyConfigured, ValueError, TypeError) as error:
            listener.close()
            raise CommandError(str(error)) from error

    def print_banner(self, options) -> None:
        from ...asgi import channel_layers

        host, port = self.runner.address[:2]
        if self._raw_ipv6:
            shown = f"[{self.addr}]"
        elif self.addr == "0":
            shown = "0.0.0.0"
        else:
            shown = self.addr
        layer = channel_layers[DEFAULT_CHANNEL_LAYER].channel_layer
        consumers = (
            "consumers run here"
            if options.get("run_worker", True)
            else ("no consumers here (--noworker)")
        )
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        self.stdout.write(
            f"{datetime.now():%B %d, %Y - %X}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting geventchannels development server at http://{shown}:{port}/\n"
            f"Channel layer {DEFAULT_CHANNEL_LAYER!r} is {type(layer).__name__}; {consumers}.\n"
            f"Quit the server with {quit_command}."
        )
        self.stdout.flush()
