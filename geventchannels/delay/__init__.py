"""Delayed messages: what is sent to ``asgi.delay`` as
``{"channel": name, "delay": milliseconds, "content": {...}}`` is sent to ``channel`` once
the delay has passed (ASGI's delay protocol, as in Channels 1.x).

Every process that runs a consumer pool runs the delay service too (``DELAY_SERVICE``
turns it off; ``manage.py rundelay`` runs one alone). On the in-memory layer messages
wait in this process (in_process.py); on Redis they wait in Redis and every process's
service shares them (on_redis.py). ``Channel(name).send(content, delay=seconds)`` sends
the same message. See docs/delay.md.

Importing this package loads nothing but the message format; a service's module is
imported when one starts.
"""

from __future__ import annotations

from ..layers.base import BaseChannelLayer
from .messages import DELAY_CHANNEL, BadDelayMessage, delay_message
from .service import DelayService, acquire, release, running, start_for_pool, uses_redis

__all__ = [
    "DELAY_CHANNEL",
    "BadDelayMessage",
    "DelayService",
    "acquire",
    "delay_message",
    "release",
    "running",
    "start_for_pool",
    "statistics",
]


def statistics(layer: BaseChannelLayer) -> dict[str, float]:
    """``delayed_messages_pending`` and ``delayed_messages_next_due`` (Unix time, 0 when
    nothing waits) of ``layer``, whether or not this process runs its service (on the
    in-memory layer, messages wait only where the service runs)."""
    service = running(layer)
    if service is None:
        if not uses_redis(layer):
            return {"delayed_messages_pending": 0, "delayed_messages_next_due": 0.0}
        from .on_redis import RedisDelays

        service = RedisDelays(layer)  # reads Redis; never started
    return service.statistics()
