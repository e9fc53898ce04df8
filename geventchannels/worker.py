"""The consumer pool: greenlets that take messages and run consumers.

Messages reach the pool two ways. The server of this process hands it the messages of
its own sockets (``websocket.*``, ``http.request``, ``http.disconnect``) with ``offer``
whenever the pool consumes their channel: local first, they never touch the layer.
Everything else (named channels such as background tasks, sockets of servers that run no
pool) comes from the layer, taken by one receiving greenlet in batches of as many
messages as consumer greenlets are free, so that what this process cannot run yet stays
in the layer for other processes.

Both ways end in one synchronous dispatch step. A consumer greenlet finds the consumer
with the Router, calls it, and sends what it buffered. With ``ORDERED_DISPATCH`` the
messages of one socket (one ``reply_channel``) never run at the same time and keep the
order they were dispatched in: a message for a socket whose consumer is running is
queued behind it and run next by the same greenlet. A message that finds every consumer
greenlet busy waits in the pool's queue, first in first out, and so does any later
message of a socket with messages waiting there. An offered message is refused with
ChannelFull when its channel's capacity of messages already waits there (or behind its
socket's running consumer), so the server's patience, 503 and 1013 keep their meaning.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
from gevent import getcurrent
from gevent.event import Event
from gevent.queue import SimpleQueue

from . import conf, watchdog
from .consuming import RETRIES_KEY, ConsumerCalls
from .delay import service as delays
from .exceptions import ChannelFull
from .layers.copying import check_message
from .signals import worker_ready

if TYPE_CHECKING:
    from .asgi import ChannelLayerWrapper

logger = logging.getLogger(__name__)

#: A message for a consumer greenlet: (channel, content, reply_channel when ordered, offered).
Job = tuple[str, dict, "str | None", bool]

__all__ = ["RETRIES_KEY", "SocketBacklogFull", "Worker"]


class SocketBacklogFull(ChannelFull):
    """An offered message refused because its channel's capacity of that socket's
    messages already waits for the socket's running consumer (ORDERED_DISPATCH): only
    that socket must wait, not the others on the channel."""


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
    #: Seconds before the receiving greenlet gets another turn while offered messages wait,
    #: after a turn that found the layer empty: a turn costs a non-blocking receive.
    remote_turn_pause = 0.005

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
        self.full_warning = conf.get("WORKER_FULL_WARNING", overrides)
        self.channels = self.apply_channel_filters(
            self.router.channels, only_channels, exclude_channels
        )
        self._greenlets: list[gevent.Greenlet] = []
        self._consumers: list[gevent.Greenlet] = []
        self._stopping = False
        self._free = 0
        self._free_changed = Event()
        self._jobs: SimpleQueue = SimpleQueue()
        #: reply_channel -> (channel, content, offered) waiting for the greenlet that runs
        #: that socket's consumer.
        self._busy: dict[str, deque[tuple[str, dict, bool]]] = {}
        self._consumed = frozenset(self.channels)
        self._accepting = False
        #: (channel, content, offered, since) that found every consumer greenlet busy.
        self._queue: deque[tuple[str, dict, bool, float]] = deque()
        #: Offered messages per channel in _queue, held to the channel's capacity.
        self._queued: dict[str, int] = {}
        #: reply_channel -> its messages in _queue: later ones must queue behind them.
        self._queued_replies: dict[str, int] = {}
        #: The receiving greenlet waits for a free consumer greenlet.
        self._receiver_waiting = False
        self._remote_turn_at = 0.0
        self._calls = ConsumerCalls(
            self.router, self.channel_layer, Worker, self.consume_later_limit, self._put_back
        )
        self._delay: delays.DelayService | None = None
        #: Since when every consumer greenlet is busy (None: one is free).
        self._full_since: float | None = None
        self._full_check: gevent.Greenlet | None = None
        self._watchdog: watchdog.PoolWatch | None = None

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
        self._accepting = True
        # Delayed messages are delivered wherever consumers run (docs/delay.md).
        self._delay = delays.start_for_pool(self.channel_layer, self.overrides)
        self._watchdog = watchdog.start_for_pool(self._calls, self.overrides)
        logger.info("consumers on: %s (%d greenlets)", ", ".join(self.channels), self.concurrency)
        worker_ready.send(sender=self)

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking messages, give running consumers ``timeout`` seconds to finish
        (``GRACEFUL_TIMEOUT`` by default), then kill what still runs."""
        if timeout is None:
            timeout = conf.get("GRACEFUL_TIMEOUT", self.overrides)
        self._stopping = True
        self._accepting = False
        if self._full_check is not None:
            self._full_check.kill(block=False)
            self._full_check = None
        if self._delay is not None:
            delays.release(self._delay)
            self._delay = None
        if self._greenlets:
            # The receiver only ever waits in receive(), which gives a message it was
            # handed back to its channel when killed, so stopping it here loses nothing.
            self._greenlets[0].kill(block=True, timeout=timeout)
        # No receiver any more: free greenlets take what waits in the queue.
        self._receiver_waiting = False
        self._run_queued()
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
        if self._queue:
            logger.warning(
                "%d messages that waited for a free consumer were lost: the pool stopped",
                len(self._queue),
            )
            self._queue.clear()
            self._queued.clear()
            self._queued_replies.clear()
        watchdog.release(self._watchdog)
        self.channel_layer.forget_consumer_pool(self)

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

    # -- local first: the server's own sockets -------------------------------------

    def takes(self, channel: str) -> bool:
        """Whether the server of this process should ``offer`` its sockets' messages on
        ``channel`` to this pool rather than send them through the layer."""
        return self._accepting and channel in self._consumed

    def offer(self, channel: str, content: dict) -> None:
        """Take a message the server built for one of its sockets (and never touches
        again) without the layer. Raises MessageTooLarge as the layer would, and
        ChannelFull when the channel's capacity of offered messages already waits for a
        free consumer greenlet, or for this socket's running consumer."""
        layer = self.channel_layer
        check_message(content, layer.max_message_size)
        try:
            self._dispatch(channel, content, True)
        except ChannelFull:
            layer.count_local(channel, full=True)
            raise
        layer.count_local(channel)

    def local_backlog(self, channel: str | None = None) -> tuple[int, float]:
        """Offered messages (of ``channel``, or all) waiting to run, and the seconds the
        oldest has waited for a free consumer greenlet: for the layer's statistics."""
        now = monotonic()
        count, oldest = 0, 0.0
        for name, _content, offered, since in self._queue:
            if offered and (channel is None or name == channel):
                count += 1
                oldest = max(oldest, now - since)
        for waiting in self._busy.values():
            count += sum(1 for name, _c, offered in waiting if offered and channel in (None, name))
        return count, oldest

    def withdraw(self, content: dict) -> bool:
        """Take back an offered message still waiting for a free consumer greenlet (a
        handshake given up on), so that it never runs; False if a consumer took it."""
        for index, (channel, queued, offered, _since) in enumerate(self._queue):
            if queued is content and offered:
                del self._queue[index]
                self._unqueued(channel, content, offered)
                return True
        return False

    # -- dispatch: one synchronous step, so that dispatch order is run order ----------

    def _dispatch(self, channel: str, content: dict, offered: bool, first: bool = False) -> None:
        """Run a message on a free consumer greenlet, behind its socket's running
        consumer, or, when every greenlet is busy, at the end of the queue. ``first``: a
        message of the receiving greenlet's turn, which takes a free greenlet even while
        offered messages wait."""
        reply = content.get("reply_channel") if self.ordered else None
        if type(reply) is not str:
            reply = None
        # Earlier messages of this socket waiting in the queue: this one goes behind them.
        behind = reply is not None and reply in self._queued_replies
        if reply is not None and not behind:
            waiting = self._busy.get(reply)
            if waiting is not None:
                if len(waiting) < self.channel_layer.get_capacity(channel):
                    waiting.append((channel, content, offered))
                elif offered:
                    raise SocketBacklogFull(self._full(channel, f"{len(waiting)} of {reply}"))
                else:
                    self._overflow(channel, reply, len(waiting))
                return
        if not behind and self._free and (first or not self._queue):
            if reply is not None:
                self._busy[reply] = deque()
            self._take_greenlet((channel, content, reply, offered))
            return
        if offered:
            queued = self._queued.get(channel, 0)
            if queued >= self.channel_layer.get_capacity(channel):
                raise ChannelFull(self._full(channel, f"{queued} messages"))
            self._queued[channel] = queued + 1
        if reply is not None:
            self._queued_replies[reply] = self._queued_replies.get(reply, 0) + 1
        self._queue.append((channel, content, offered, monotonic()))

    @staticmethod
    def _full(channel: str, what: str) -> str:
        return (
            f"channel {channel!r} is full in this process's consumer pool ({what} wait for "
            "a consumer): run more consumers, or raise WORKER_CONCURRENCY or its capacity"
        )

    def _next_queued(self) -> Job | None:
        """The next queued message to run; those whose socket's consumer is running
        now go behind it instead."""
        queue, busy = self._queue, self._busy
        while queue:
            channel, content, offered, _since = queue.popleft()
            reply = self._unqueued(channel, content, offered)
            if reply is not None:
                waiting = busy.get(reply)
                if waiting is not None:
                    waiting.append((channel, content, offered))
                    continue
                busy[reply] = deque()
            return channel, content, reply, offered
        return None

    def _unqueued(self, channel: str, content: dict, offered: bool) -> str | None:
        """Count a message out of the queue; its reply_channel when ordered."""
        if offered:
            self._queued[channel] -= 1
        reply = content.get("reply_channel") if self.ordered else None
        if type(reply) is not str:
            return None
        left = self._queued_replies[reply] - 1
        if left:
            self._queued_replies[reply] = left
        else:
            del self._queued_replies[reply]
        return reply

    def _take_greenlet(self, job: Job) -> None:
        self._free -= 1
        self._jobs.put(job)
        if not self._free:
            self._full_since = monotonic()
            if self.full_warning and self._full_check is None:
                self._full_check = gevent.spawn_later(self.full_warning, self._check_full)

    def _check_full(self) -> None:
        """Warn when the pool has been full for WORKER_FULL_WARNING seconds, at most once
        per as many seconds: consumers that never return would otherwise starve every
        socket in silence."""
        since = self._full_since
        if since is None or self._stopping:
            self._full_check = None
            return
        full_for = monotonic() - since
        if full_for >= self.full_warning:
            logger.warning(
                "every consumer greenlet (%d) has been busy for %.1f s, %d messages wait; "
                "running: %s",
                self.concurrency,
                full_for,
                len(self._queue),
                self._calls.running_report(),
            )
            wait = self.full_warning
        else:
            wait = self.full_warning - full_for
        self._full_check = gevent.spawn_later(wait, self._check_full)

    def _run_queued(self) -> None:
        """Give free consumer greenlets to queued messages."""
        while self._free and self._queue:
            job = self._next_queued()
            if job is None:
                return
            self._take_greenlet(job)

    def _remote_turn(self) -> bool:
        """Whether a greenlet that finished, with messages queued, should go free for the
        receiving greenlet rather than take the next: every other time while the
        receiver waits for one, so that offered messages cannot starve the layer's."""
        if not self._receiver_waiting or self._remote_turn_at > monotonic():
            return False
        self._receiver_waiting = False
        return True

    # -- receiving from the layer: one greenlet ------------------------------------

    def _receive(self) -> None:
        """Take messages from the layer while consumer greenlets are free, as many as
        are free at once, and dispatch them. While offered messages wait in the queue
        the receiver only looks (a non-blocking receive) when its turn comes."""
        receive_batch = self.channel_layer.receive_batch
        channels = self.channels
        timeout = self.receive_timeout
        dispatch = self._dispatch
        failures = 0
        try:
            while not self._stopping:
                if not self._free:
                    self._receiver_waiting = True
                    self._free_changed.clear()
                    self._free_changed.wait(timeout)
                    self._receiver_waiting = False
                    continue
                turn = bool(self._queue)
                try:
                    batch = receive_batch(channels, self._free, not turn, timeout)
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
                    self._run_queued()
                    gevent.sleep(delay)
                    continue
                failures = 0
                if turn and not batch:
                    self._remote_turn_at = monotonic() + self.remote_turn_pause
                for channel, content in batch:
                    dispatch(channel, content, False, True)
                self._run_queued()
        except BaseException:
            if not self._stopping:
                logger.exception("the consumer pool stopped receiving")
            raise

    # -- consuming: the pool greenlets -------------------------------------------

    def _consume(self) -> None:
        get = self._jobs.get
        while True:
            job: Job | None = get()
            if job is None:
                return
            while job is not None:
                self._run(job)
                job = self._next_queued() if self._queue and not self._remote_turn() else None
            self._free += 1
            self._full_since = None
            if self._free == 1:
                self._free_changed.set()

    def _run(self, job: Job) -> None:
        """Run one message, then those queued behind its socket meanwhile."""
        channel, content, reply, offered = job
        handle = self._calls.handle
        try:
            handle(channel, content, offered)
            if reply is not None:
                waiting = self._busy[reply]
                while waiting:
                    channel, content, offered = waiting.popleft()
                    handle(channel, content, offered)
        except Exception:
            logger.exception("the consumer pool failed on a message on %s", channel)
        finally:
            if reply is not None:
                waiting = self._busy.pop(reply)
                if waiting:
                    logger.warning(
                        "%d messages for %s were lost: the consumer pool was killed",
                        len(waiting),
                        reply,
                    )

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

    def _put_back(self, channel: str, content: dict) -> None:
        """Where ConsumeLater puts an offered message: behind its socket's consumer (the
        greenlet running it takes it again next, after the socket's other messages), or
        at the end of the queue."""
        reply = content.get("reply_channel") if self.ordered else None
        waiting = self._busy.get(reply) if type(reply) is str else None
        if waiting is not None and reply not in self._queued_replies:
            waiting.append((channel, content, True))  # one per running consumer: bounded
        else:
            self._dispatch(channel, content, True)
