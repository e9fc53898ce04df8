"""``manage.py rundelay``: a process that only delivers delayed messages (asgi.delay).

Every process that runs consumers does this already; a dedicated process is for a
deployment that turns ``DELAY_SERVICE`` off in its servers and workers. It starts like
runworker (patched, the same checks) and needs a layer that other processes share
(Redis): an in-memory layer's delayed messages never reach it. SIGTERM / SIGINT stop it;
on Redis nothing waiting is lost.
"""

from __future__ import annotations

from .runworker import Command as RunworkerCommand
from .runworker import wait_for_stop_signal


class Command(RunworkerCommand):
    help = "Delivers delayed messages (asgi.delay) of a shared (Redis) channel layer."
    needs_shared_layer = "rundelay delivers the delayed messages that other processes send"

    layer_help = "The CHANNEL_LAYERS alias whose asgi.delay to serve (default: %(default)s)."

    def add_arguments(self, parser):
        self.add_layer_argument(parser)
        parser.add_argument(
            "--sleep",
            type=float,
            default=None,
            help="Accepted for Channels 1.x command lines and ignored: the service waits "
            "for the next due time instead of polling.",
        )

    def run_worker(self, wrapper, options) -> None:
        """Run the delay service of the layer until SIGTERM or SIGINT."""

        from ...delay import acquire, release

        layer = wrapper.channel_layer
        service = acquire(layer)
        self.stdout.write(
            f"Delivering delayed messages (asgi.delay) of channel layer {wrapper.alias!r} "
            f"({type(layer).__name__}).\nStop with CONTROL-C or SIGTERM."
        )
        self.stdout.flush()
        try:
            wait_for_stop_signal()
        finally:
            release(service)
        self.stdout.write(f"Stopped; this process delivered {service.delivered} delayed messages.")
