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

from ... import DEFAULT_CHANNEL_LAYER
from .. import bootstrap


class Command(BaseCommand):
    help = "Runs consumers from a shared (Redis) channel layer in this process, as greenlets."
    #: The checks run in the patched process (see handle), where the gevent check passes.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--layer",
            default=DEFAULT_CHANNEL_LAYER,
            dest="layer",
            help="The CHANNEL_LAYERS alias to take messages from (default: %(default)s).",
        )
        parser.add_argument(
            "--only-channels",
            "--only_channels",
            action="append",
            dest="only_channels",
            default=None,
            metavar="GLOB",
            help="Consume only channels matching this glob, e.g. 'websocket.*' (repeatable).",
        )
        parser.add_argument(
            "--exclude-channels",
            "--exclude_channels",
            action="append",
            dest="exclude_channels",
            default=None,
            metavar="GLOB",
            help="Do not consume channels matching this glob (repeatable).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help="Consumer greenlets in this process (default: WORKER_CONCURRENCY).",
        )

    def handle(self, *args, **options):
        from ...monkey import is_patched

        wrapper = self.load_layer(options["layer"])
        if not is_patched():
            try:
                bootstrap.reexec_patched()
            except RuntimeError as error:
                raise CommandError(str(error)) from error
        from ...checks import expect_serving

        expect_serving()
        self.check()
        self.run_worker(wrapper, options)

    def load_layer(self, alias: str):
        from ...asgi import channel_layers
        from ...layers.inmemory import InMemoryChannelLayer

        try:
            wrapper = channel_layers[alias]
            wrapper.router  # noqa: B018 -- builds the Router: a bad ROUTING fails here
        except (ImproperlyConfigured, ImportError, ValueError, TypeError) as error:
            raise CommandError(f"cannot load channel layer {alias!r}: {error}") from error
        if isinstance(wrapper.channel_layer, InMemoryChannelLayer):
            raise CommandError(
                f"channel layer {alias!r} is {type(wrapper.channel_layer).__name__}, which lives inside one process: a separate runworker "
                "would never see the server's messages. Use "
                f"geventchannels.layers.RedisChannelLayer for {alias!r} (or run the consumers in the "
                "server process, which runserver and the gunicorn worker do by default)."
            )
        return wrapper

    def run_worker(self, wrapper, options) -> None:
        import gevent
        from gevent.event import Event

        from ...worker import Worker

        try:
            worker = Worker(
                wrapper,
                concurrency=options["concurrency"],
                only_channels=options["only_channels"],
                exclude_channels=options["exclude_channels"],
            )
            worker.start()
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Running {worker.concurrency} consumer greenlets on channel layer "
            f"{wrapper.alias!r} ({type(wrapper.channel_layer).__name__}), channels: "
            f"{', '.join(worker.channels)}\nStop with CONTROL-C or SIGTERM."
        )
        self.stdout.flush()
        stop = Event()
        handlers = [gevent.signal_handler(s, stop.set) for s in (signal.SIGTERM, signal.SIGINT)]
        try:
            stop.wait()
            self.stdout.write("Stopping: letting running consumers finish.")
            worker.stop()
        finally:
            for handler in handlers:
                handler.cancel()
