"""``manage.py rundelay``: a process that only delivers delayed messages (asgi.delay).

Every process that runs consumers does this already; a dedicated process is for a
deployment that turns ``DELAY_SERVICE`` off in its servers and workers. It starts like
runworker (patched, the same checks) and needs a layer that other processes share
(Redis): an in-memory layer's delayed messages never reach it. SIGTERM / SIGINT stop it;
on Redis nothing waiting is lost.
"""

from __future__ import annotations

import signal

from ... import DEFAULT_CHANNEL_LAYER
from .runworker import Command as RunworkerCommand


class Command(RunworkerCommand):
    help = "Delivers delayed messages (asgi.delay) of a shared (Redis) channel layer."
    needs_shared_layer = "rundelay delivers the delayed messages that other processes send"

    def add_arguments(self, parser):
        parser.add_argument(
            "--layer",
            default=DEFAULT_CHANNEL_LAYER,
            dest="layer",
            help="The CHANNEL_LAYERS alias whose asgi.delay to serve (default: %(default)s).",
        )
        parser.add_argument(
            "--sleep",
            type=float,
            default=None,
            help="Accepted for Channels 1.x command lines and ignored: the service waits "
            "for the next due time instead of polling.",
        )

    def run_worker(self, wrapper, options) -> None:
        """Run the delay service of the layer until SIGTERM or SIGINT."""
        import gevent
        from gevent.event import Event

        from ...delay import acquire, release

        layer = wrapper.channel_layer
        service = acquire(layer)
        self.stdout.write(
            f"Delivering delayed messages (asgi.delay) of channel layer {wrapper.alias!r} "
            f"({type(layer).__name__}).\nStop with CONTROL-C or SIGTERM."
        )
        self.stdout.flush()
        stop = Event()
        handlers = [gevent.signal_handler(s, stop.set) for s in (signal.SIGTERM, signal.SIGINT)]
        try:
            stop.wait()
        finally:
            for handler in handlers:
                handler.cancel()
            release(service)
        self.stdout.write(f"Stopped; this process delivered {service.delivered} delayed messages.")
