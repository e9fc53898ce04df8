"""``manage.py runworker``: a process that only runs consumers, from a shared channel layer.

Servers started with ``--noworker`` (or that should not carry every consumer) leave
messages in a Redis channel layer; runworker processes take them. ``--only-channels`` and
``--exclude-channels`` split the channels between pools. SIGTERM / SIGINT stop taking
messages and let running consumers finish within GRACEFUL_TIMEOUT.
"""

from __future__ import annotations

import signal

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from ... import DEFAULT_CHANNEL_LAYER, conf
from .. import bootstrap


class Command(BaseCommand):
    help = "Runs consumers from a shared (Redis) channel layer in this process, as greenlets."
    #: The checks run in the patched process (see handle), where the gevent check passes.
    requires_system_checks = []
    #: Why the layer must reach other processes: an in-memory one is refused with it.
    needs_shared_layer = "runworker takes the messages that server processes send"

    #: What --layer names, in its help text.
    layer_help = "The CHANNEL_LAYERS alias to take messages from (default: %(default)s)."

    def add_arguments(self, parser):
        self.add_layer_argument(parser)
        parser.add_argument(
            "--only-channels",
            action="append",
            dest="only_channels",
            default=None,
            metavar="GLOB",
            help="Consume only channels matching this glob, e.g. 'websocket.*' (repeatable).",
        )
        parser.add_argument(
            "--exclude-channels",
            action="append",
            dest="exclude_channels",
            default=None,
            metavar="GLOB",
            help="Do not consume channels matching this glob (repeatable).",
        )
        conf.add_arguments(parser, conf.RUNWORKER)

    def add_layer_argument(self, parser) -> None:
        parser.add_argument("--layer", default=DEFAULT_CHANNEL_LAYER, help=self.layer_help)

    def handle(self, *args, **options):
        from ...monkey import is_patched

        if not is_patched():
            self.require_configuration(options["layer"], serving=False)
            try:
                bootstrap.reexec_patched()
            except RuntimeError as error:
                raise CommandError(str(error)) from error
        wrapper = self.require_configuration(options["layer"], serving=True)
        self.run_worker(wrapper, options)

    def require_configuration(self, alias: str, serving: bool):
        """Run the start-up checks (one line per error, no traceback) and build the layer;
        refuse a layer that cannot reach the servers' processes."""
        from ...asgi import channel_layers
        from ...checks import expect_serving, startup_report, unshared_layer_error

        expect_serving(serving)
        errors, _ = startup_report(alias)
        if errors:
            raise CommandError("\n".join(errors))
        unshared = unshared_layer_error(alias, self.needs_shared_layer)
        if unshared:
            raise CommandError(unshared)
        if not serving:
            return None
        self.check()  # every app's checks, warnings shown
        try:
            wrapper = channel_layers[alias]
            wrapper.router  # noqa: B018 -- builds the Router: a bad ROUTING fails here
        except (ImproperlyConfigured, ImportError, ValueError, TypeError) as error:
            raise CommandError(f"cannot load channel layer {alias!r}: {error}") from error
        return wrapper

    def run_worker(self, wrapper, options) -> None:

        from ...worker import Worker

        try:
            worker = Worker(
                wrapper,
                overrides=conf.overrides_from(options),
                only_channels=options["only_channels"],
                exclude_channels=options["exclude_channels"],
            )
            worker.start()
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Running {worker.concurrency} consumer greenlets on channel layer "
            f"{wrapper.alias!r} ({type(wrapper.channel_layer).__name__}), consumers on: "
            f"{', '.join(worker.channels)}\nStop with CONTROL-C or SIGTERM."
        )
        self.stdout.flush()
        wait_for_stop_signal()
        self.stdout.write("Stopping: letting running consumers finish.")
        worker.stop()


def wait_for_stop_signal() -> None:
    """Block this greenlet until SIGTERM or SIGINT."""
    import gevent
    from gevent.event import Event

    stop = Event()
    handlers = [gevent.signal_handler(s, stop.set) for s in (signal.SIGTERM, signal.SIGINT)]
    try:
        stop.wait()
    finally:
        for handler in handlers:
            handler.cancel()
