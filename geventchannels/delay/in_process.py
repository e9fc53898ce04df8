"""asgi.delay on a layer whose messages live in this process (the in-memory layer): a heap
of due times and one greenlet.

The greenlet receives from asgi.delay with a timeout that ends at the earliest due time,
so a new message (earlier or not) wakes it, the next due time wakes it, and nothing else
does: no timer or greenlet per message, no polling. What waits is lost when the process
ends, like every message of that layer.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from time import monotonic

import gevent

from ..exceptions import ChannelFull
from ..layers.base import BaseChannelLayer
from .messages import DELAY_CHANNEL, BadDelayMessage, check
from .service import DelayService, log_bad, log_full

logger = logging.getLogger("geventchannels.delay")

#: Messages sent in one go before the greenlet lets others run (a burst falling due).
SEND_BATCH = 500
#: Seconds before a message whose channel was full is tried again (until it is the
#: layer's expiry past its due time).
RETRY = 0.05


class InProcessDelays(DelayService):
    """The delay service of a layer that lives in this process."""

    def __init__(self, layer: BaseChannelLayer):
        super().__init__(layer)
        #: (when to send, by the monotonic clock; tie-breaker; channel; content; due time,
        #: later than the first when its channel was full)
        self._heap: list[tuple[float, int, str, dict, float]] = []
        self._order = itertools.count()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
            self._greenlet = None
        if self._heap:
            logger.warning(
                "%d delayed messages are lost: the in-memory layer keeps them only while "
                "this process runs (use the Redis layer to keep them across restarts)",
                len(self._heap),
            )
            self._heap.clear()

    def statistics(self) -> dict[str, float]:
        heap = self._heap
        next_due = time.time() + max(0.0, heap[0][0] - monotonic()) if heap else 0.0
        return {"delayed_messages_pending": len(heap), "delayed_messages_next_due": next_due}

    def _run(self) -> None:
        receive = self.layer.receive
        channels = [DELAY_CHANNEL]
        heap = self._heap
        while True:
            wait = None
            if heap:
                wait = heap[0][0] - monotonic()
                if wait <= 0:
                    self._send_due()
                    continue
            try:
                _channel, message = receive(channels, True, wait)
                while message is not None:
                    self._add(message)
                    _channel, message = receive(channels)
            except Exception:
                logger.exception("receiving from %s failed; retrying in 1 s", DELAY_CHANNEL)
                gevent.sleep(1)

    def _add(self, message: dict) -> None:
        try:
            delayed = check(message, self.layer)
        except BadDelayMessage as bad:
            log_bad(bad)
            return
        due = monotonic() + delayed.seconds
        heapq.heappush(self._heap, (due, next(self._order), delayed.channel, delayed.content, due))

    def _send_due(self) -> None:
        heap = self._heap
        now = monotonic()
        for _ in range(SEND_BATCH):
            if not heap or heap[0][0] > now:
                return
            _at, order, channel, content, due = heapq.heappop(heap)
            try:
                # The content came out of the layer, which copied it on the way in.
                self.layer.send_owned(channel, content, checked=True)
                self.delivered += 1
            except ChannelFull:
                if now - due > getattr(self.layer, "expiry", 60):
                    log_full(channel)
                else:
                    heapq.heappush(heap, (now + RETRY, order, channel, content, due))
            except Exception:
                logger.exception("sending a delayed message to %s failed; it is dropped", channel)
        gevent.sleep(0)
