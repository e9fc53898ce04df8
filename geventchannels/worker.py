"""The consumer pool: greenlets that take messages from a channel layer and run consumers.

One receiving greenlet takes a message from the routed channels whenever a consumer
greenlet is free and hands it over; the consumer greenlet finds the consumer with the
Router, calls it, and sends what it buffered. With ``ORDERED_DISPATCH`` the messages of
one socket (one ``reply_channel``) never run at the same time and keep the order they
were received in: a message for a socket whose consumer is running is queued behind it
and run next by the same greenlet. A single receiver is what makes that order exact:
with several, a message handed to one greenlet could wait for its turn to run while
another greenlet runs a later message of the same socket.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import gevent
from gevent import getcurrent
from gevent.event import Event
from gevent.queue import SimpleQueue

from . import conf
from .channel import discard_buffered, flush_buffered, start_buffering
from .exceptions import ChannelFull, ChannelSocketException, ConsumeLater, DenyConnection
from .message import Message
from .signals import send_consumer_finished, send_consumer_started, worker_ready
from .utils import name_that_thing

if TYPE_CHECKING:
    from .asgi import ChannelLayerWrapper

logger = logging.getLogger(__name__)

#: Content key counting how often ConsumeLater put a message back (as in Channels 1.x).
RETRIES_KEY = "__retries__"


class Worker:
    """A pool of consumer greenlets for one channel layer.

    ``channel_layer_wrapper`` is ``channel_layers[alias]`` (layer plus router).
    ``only_channels`` / ``exclude_channels`` are glob patterns over the routed channel
    names. ``concurrency`` and ``ordered`` default to the ``WORKER_CONCURRENCY`` and
    ``ORDERED_DISPATCH`` settings; ``overrides`` (``{"CONSUME_LATER_LIMIT": 5}``, from a run
    mode's command line) win over the settings for every consumer-pool setting.
    """

    #: Seconds the receiving greenlet waits in one ``receive`` call (stop() does not wait
    #: for it: it interrupts the receive, and the layer puts back a message it was handing).
    receive_timeout = 5.0

    def __init__(
        self,
        channel_layer_wrapper: ChannelLayerWrapper,
        concurrency: int | None = None,
        only_channels: Iterable[str] | None = None,
        exclude_channels: Iterable[str] | None = None,
        ordered: bool | None = None,
        overrides: Mapping[str, Any] | None = None,
    ):
        overrides = dict(overrides or {})
        if concurrency is not None:
            overrides["WORKER_CONCURRENCY"] = concurrency
        if ordered is not None:
            overrides["ORDERED_DISPATCH"] = ordered
        self.overrides = overrides
        self.channel_layer_wrapper = channel_layer_wrapper
        self.channel_layer = channel_layer_wrapper.channel_layer
        self.router = channel_layer_wrapper.router
        self.concurrency = conf.get("WORKER_CONCURRENCY", overrides)
        self.ordered = conf.get("ORDERED_DISPATCH", overrides)
        self.consume_later_limit = conf.get("CONSUME_LATER_LIMIT", overrides)
        self.channels = self.apply_channel_filters(
            self.router.channels, only_channels, exclude_channels
        )
        self._greenlets: list[gevent.Greenlet] = []
        self._consumers: list[gevent.Greenlet] = []
        self._stopping = False
        self._free = 0
        self._free_changed = Event()
        self._jobs: SimpleQueue = SimpleQueue()
        #: reply_channel -> messages waiting for the greenlet that runs that socket's consumer.
        self._busy: dict[str, deque[tuple[str, dict]]] = {}
        self._names: dict[Callable, str] = {}

    @staticmethod
    def apply_channel_filters(
        channels: Iterable[str],
        only: Iterable[str] | None,
        exclude: Iterable[str] | None,
    ) -> list[str]:
        """The channels matching any ``only`` glob and no ``exclude`` glob, sorted."""
        names = sorted(channels)
        if only:
            names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in only)]
        if exclude:
            names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
        return names

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Spawn the pool greenlets and send ``worker_ready``."""
        if self._greenlets:
            raise RuntimeError("this Worker is already started")
        if not self.channels:
            raise ValueError(
                "the consumer pool has no channel to listen on: the routing has none, or "
                "only_channels / exclude_channels removed them all"
            )
        self._stopping = False
        self._free = self.concurrency
        self._consumers = [gevent.spawn(self._consume) for _ in range(self.concurrency)]
        self._greenlets = [gevent.spawn(self._receive), *self._consumers]
        self.channel_layer.register_consumer_pool(self)
        logger.info("consumers on: %s (%d greenlets)", ", ".join(self.channels), self.concurrency)
        worker_ready.send(sender=self)

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking messages, give running consumers ``timeout`` seconds to finish
        (``GRACEFUL_TIMEOUT`` by default), then kill what still runs."""
        if timeout is None:
            timeout = conf.get("GRACEFUL_TIMEOUT", self.overrides)
        self._stopping = True
        if self._greenlets:
            # The receiver only ever waits in receive(), which gives a message it was
            # handed back to its channel when killed, so stopping it here loses nothing.
            self._greenlets[0].kill(block=True, timeout=timeout)
        for _ in self._consumers:
            self._jobs.put(None)
        # A consumer may stop its own pool: it cannot wait for itself.
        others = [g for g in self._greenlets if g is not getcurrent()]
        gevent.joinall(others, timeout=timeout)
        running = [g for g in others if not g.dead]
        if running:
            # Idle greenlets may not have seen their stop signal yet; only busy ones lose work.
            busy = self.concurrency - self._free
            if busy > 0:
                logger.warning(
                    "%d consumers still running after %.1f s; stopping them (their messages "
                    "are lost)",
                    busy,
                    timeout,
                )
            gevent.killall(running, block=True, timeout=5)

    def run(self) -> None:
        """Start the pool and block until it is stopped."""
        self.start()
        self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the pool greenlets to end; True if they all did."""
        gevent.joinall(self._greenlets, timeout=timeout)
        return all(g.dead for g in self._greenlets)

    @property
    def running(self) -> bool:
        return any(not g.dead for g in self._greenlets)

    # -- receiving: one greenlet, so that receive order is dispatch order ------------

    def _receive(self) -> None:
        """Take messages from the layer while a consumer greenlet is free, and hand
        each to one. A message whose socket (reply_channel) is being consumed goes to
        that socket's queue instead, which the busy consumer greenlet runs next."""
        receive = self.channel_layer.receive
        channels = self.channels
        timeout = self.receive_timeout
        ordered = self.ordered
        busy = self._busy
        put = self._jobs.put
        failures = 0
        try:
            while not self._stopping:
                if not self._free:
                    self._free_changed.clear()
                    self._free_changed.wait(timeout)
                    continue
                try:
                    channel, content = receive(channels, True, timeout)
                except Exception as error:
                    failures += 1
                    delay = min(5.0, 0.1 * 2**failures)
                    if failures == 1 or failures % 10 == 0:
                        logger.error(
                            "receiving from the channel layer failed (%s: %s); retrying in %.1f s",
                            type(error).__name__,
                            error,
                            delay,
                        )
                    gevent.sleep(delay)
                    continue
                failures = 0
                if channel is None or content is None:
                    continue
                reply = content.get("reply_channel") if ordered else None
                if type(reply) is str:
                    waiting = busy.get(reply)
                    if waiting is not None:
                        if len(waiting) < self.channel_layer.get_capacity(channel):
                            waiting.append((channel, content))
                        else:
                            self._overflow(channel, reply, len(waiting))
                        continue
                    busy[reply] = deque()
                else:
                    reply = None
                self._free -= 1
                put((channel, content, reply))
        except BaseException:
            if not self._stopping:
                logger.exception("the consumer pool stopped receiving")
            raise

    # -- consuming: the pool greenlets -------------------------------------------

    def _consume(self) -> None:
        get = self._jobs.get
        handle = self._handle
        busy = self._busy
        while True:
            job = get()
            if job is None:
                return
            channel, content, reply = job
            try:
                handle(channel, content)
                if reply is not None:
                    waiting = busy[reply]
                    while waiting:
                        channel, content = waiting.popleft()
                        handle(channel, content)
            except Exception:
                logger.exception("the consumer pool failed on a message on %s", channel)
            finally:
                if reply is not None:
                    waiting = busy.pop(reply)
                    if waiting:
                        logger.warning(
                            "%d messages for %s were lost: the consumer pool was killed",
                            len(waiting),
                            reply,
                        )
                self._free += 1
                if self._free == 1:
                    self._free_changed.set()

    def _overflow(self, channel: str, reply: str, waiting: int) -> None:
        """A socket sent more than its channel holds while its consumer is busy: treat it
        as a full channel (WebSockets are closed with 1013, try again later)."""
        logger.warning(
            "message on %s dropped: %d messages of %s already wait for its consumer (the "
            "channel's capacity)",
            channel,
            waiting,
            reply,
        )
        if channel.startswith("websocket."):
            try:
                self.channel_layer.send(reply, {"close": 1013})
            except Exception:
                pass

    def _handle(self, channel: str, content: dict) -> None:
        """Run the consumer routed for one message, with its sends buffered."""
        try:
            match = self.router.match_content(channel, content)
        except Exception:
            logger.exception("routing a message on %s failed; message ignored", channel)
            return
        if match is None:
            logger.warning(
                "no route matches the message on %s (keys: %s); ignored",
                channel,
                ", ".join(sorted(content)),
            )
            return
        consumer, kwargs = match
        message = Message(content, channel, self.channel_layer)
        start_buffering()
        try:
            send_consumer_started(Worker)
            consumer(message, **kwargs)
        except ConsumeLater:
            discard_buffered()
            self._consume_later(channel, content)
        except ChannelSocketException as error:
            flush_buffered()
            self._run_socket_exception(error, message, consumer)
        except DenyConnection:
            discard_buffered()
            self._deny(message, consumer)
        except Exception:
            discard_buffered()
            logger.exception(
                "error in consumer %s handling a message on %s", self._name(consumer), channel
            )
        except BaseException:
            discard_buffered()
            raise
        else:
            flush_buffered()
        finally:
            try:
                send_consumer_finished(Worker)
            except Exception:
                logger.exception(
                    "a consumer_finished receiver failed after %s", self._name(consumer)
                )

    # -- outcomes other than a normal return --------------------------------------

    def _consume_later(self, channel: str, content: dict) -> None:
        retries = content.get(RETRIES_KEY, 0) + 1
        if retries > self.consume_later_limit:
            logger.warning(
                "message on %s dropped: its consumer raised ConsumeLater %d times "
                "(CONSUME_LATER_LIMIT)",
                channel,
                retries - 1,
            )
            return
        content[RETRIES_KEY] = retries
        for attempt in range(10):
            try:
                self.channel_layer.send(channel, content)
                break
            except ChannelFull:
                gevent.sleep(0.01 * (attempt + 1))
        else:
            logger.warning(
                "message on %s dropped: ConsumeLater could not put it back, the "
                "channel stayed full",
                channel,
            )
            return
        # Let other greenlets run before the message comes round again.
        gevent.sleep(0)

    def _run_socket_exception(
        self, error: ChannelSocketException, message: Message, consumer: Callable
    ) -> None:
        try:
            error.run(message)
        except Exception:
            logger.exception(
                "consumer %s raised %s on %s, and acting on it failed",
                self._name(consumer),
                type(error).__name__,
                message.channel_name,
            )

    def _deny(self, message: Message, consumer: Callable) -> None:
        if message.channel_name != "websocket.connect" or message.reply_channel is None:
            logger.error(
                "consumer %s raised DenyConnection on %s; it is only meaningful in "
                "a websocket.connect consumer",
                self._name(consumer),
                message.channel_name,
            )
            return
        try:
            message.reply_channel.send({"close": True}, immediately=True)
        except Exception:
            logger.exception("could not refuse the WebSocket of %s", message.reply_channel)

    def _name(self, consumer: Callable) -> str:
        try:
            return self._names[consumer]
        except (KeyError, TypeError):
            name = name_that_thing(consumer)
            try:
                self._names[consumer] = name
            except TypeError:
                pass
            return name
