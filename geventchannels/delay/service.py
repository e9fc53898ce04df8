"""One delay service per channel layer in a process: started by the first consumer pool
(or ``rundelay``) that needs it, stopped when the last one lets it go.

Which service a layer gets depends on where its messages live: the Redis layer's are kept
in Redis (on_redis.py), any other layer's in this process (in_process.py).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from .. import conf
from ..layers.base import BaseChannelLayer

if TYPE_CHECKING:
    from ..layers.redis import RedisChannelLayer

logger = logging.getLogger("geventchannels.delay")


class DelayService:
    """Delivers the messages sent to ``asgi.delay`` on one layer when they are due."""

    def __init__(self, layer: BaseChannelLayer):
        self.layer = layer
        #: Holders of this service (consumer pools, rundelay); it stops with the last.
        self.users = 0
        #: Delayed messages this process delivered (on Redis, others deliver theirs too).
        self.delivered = 0

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def statistics(self) -> dict[str, float]:
        """``delayed_messages_pending`` (waiting for their time) and
        ``delayed_messages_next_due`` (Unix time of the earliest, 0 when none)."""
        raise NotImplementedError


#: The running service of each layer of this process, by id(layer).
_running: dict[int, DelayService] = {}


def uses_redis(layer: BaseChannelLayer) -> TypeGuard[RedisChannelLayer]:
    """Whether ``layer`` is a Redis layer (without importing that layer's module, which a
    process using only the in-memory layer never loads)."""
    module = sys.modules.get("geventchannels.layers.redis.layer")
    return module is not None and isinstance(layer, module.RedisChannelLayer)


def build(layer: BaseChannelLayer) -> DelayService:
    if uses_redis(layer):
        from .on_redis import RedisDelays

        return RedisDelays(layer)
    from .in_process import InProcessDelays

    return InProcessDelays(layer)


def acquire(layer: BaseChannelLayer) -> DelayService:
    """The delay service of ``layer``, started if it was not running; give it back with
    :func:`release`."""
    service = _running.get(id(layer))
    if service is None or service.layer is not layer:
        service = build(layer)
        service.start()
        _running[id(layer)] = service
        sources = getattr(layer, "statistics_sources", None)
        if sources is not None:
            sources.append(service.statistics)
    service.users += 1
    return service


def release(service: DelayService) -> None:
    """Let go of a service from :func:`acquire`; the last holder stops it."""
    service.users -= 1
    if service.users > 0:
        return
    if _running.get(id(service.layer)) is service:
        del _running[id(service.layer)]
    sources = getattr(service.layer, "statistics_sources", None)
    if sources is not None and service.statistics in sources:
        sources.remove(service.statistics)
    service.stop()


def start_for_pool(
    layer: BaseChannelLayer, overrides: Mapping[str, Any] | None = None
) -> DelayService | None:
    """The service a consumer pool starts with it, unless ``DELAY_SERVICE`` is off."""
    if not conf.get("DELAY_SERVICE", overrides):
        return None
    try:
        return acquire(layer)
    except Exception:
        # Delayed messages must never keep the consumers from running.
        logger.exception("the delay service of %r did not start; delayed messages wait", layer)
        return None


def running(layer: BaseChannelLayer) -> DelayService | None:
    """The delay service of ``layer`` running in this process, if any."""
    service = _running.get(id(layer))
    return service if service is not None and service.layer is layer else None


def log_bad(reason: BaseException) -> None:
    """Say once why a message on asgi.delay was dropped."""
    logger.warning("dropped a message on asgi.delay: %s", reason)


def log_full(channel: str) -> None:
    logger.warning(
        "a delayed message to %s was dropped: its channel stayed full from its due time "
        "for the layer's expiry",
        channel,
    )
