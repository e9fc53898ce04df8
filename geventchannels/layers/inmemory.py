"""The in-process channel layer: the default, for one process that serves everything.

Each channel is a deque of ``(expires_at, channel_name, message)``. A receiver that
finds nothing parks its greenlet on every channel it asked for, and the next send to
any of them hands the message straight to it and schedules its wake-up. Nothing here
yields except that wait, so greenlets need no lock between them. Expired messages and
group memberships are dropped when they are touched, never by timers.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from time import monotonic
from typing import Any

from gevent.hub import Waiter, get_hub

from ..exceptions import ChannelFull
from .base import BaseChannelLayer, non_local_name
from .copying import check_message, copy_message

logger = logging.getLogger(__name__)

#: The result of a receiver that stopped waiting: senders skip it.
_GONE = (None, None)
#: Remembered names checked for receiving; past this many, names are checked every time.
_NAME_CACHE_SIZE = 100_000
#: Channels the layer may hold before it first looks for abandoned reply channels.
_SWEEP_MIN = 1024


class _Receiver:
    """A greenlet parked in ``receive``; ``result`` stays None until a send claims it."""

    __slots__ = ("hub", "waiter", "result")

    def __init__(self, hub: Any):
        self.hub = hub
        self.waiter = Waiter(hub)
        self.result: tuple | None = None


class _RateMark:
    """Counters as of the previous statistics call: rates are averaged since then, so
    sending pays nothing for them."""

    __slots__ = ("time", "sent", "full")

    def __init__(self, time: float) -> None:
        self.time = time
        self.sent = 0
        self.full = 0

    def rates(self, now: float, sent: int, full: int) -> tuple[float, float]:
        elapsed = now - self.time
        if elapsed <= 0:
            return 0.0, 0.0
        rates = (sent - self.sent) / elapsed, (full - self.full) / elapsed
        self.time, self.sent, self.full = now, sent, full
        return rates


class _Queue:
    """One channel: its pending messages, its parked receivers and its counters.

    ``receivers`` may hold receivers that another channel already served or that gave
    up; they are skipped when met and swept out when the deque grows past
    ``receivers_limit``, which keeps parking O(1) on average.
    """

    __slots__ = (
        "messages",
        "receivers",
        "receivers_limit",
        "capacity",
        "transient",
        "sent",
        "full",
        "rate_mark",
    )

    def __init__(self, capacity: int, transient: bool, now: float):
        self.messages: deque[tuple[float, str, dict]] = deque()
        self.receivers: deque[_Receiver] = deque()
        self.receivers_limit = 32
        self.capacity = capacity
        self.transient = transient
        self.sent = 0
        self.full = 0
        self.rate_mark = _RateMark(now)

    def hand_over(self, channel: str, message: dict) -> bool:
        """Give the message to the longest-waiting live receiver, if there is one."""
        receivers = self.receivers
        while receivers:
            receiver = receivers.popleft()
            if receiver.result is None:
                receiver.result = (channel, message)
                receiver.hub.loop.run_callback(receiver.waiter.switch, None)
                return True
        return False

    def sweep_receivers(self) -> None:
        """Drop receivers that are no longer waiting; called by parking when the deque
        reaches ``receivers_limit``."""
        self.receivers = deque(r for r in self.receivers if r.result is None)
        self.receivers_limit = max(32, 2 * len(self.receivers))

    def has_receivers(self) -> bool:
        return any(receiver.result is None for receiver in self.receivers)

    def drop_expired(self, now: float) -> None:
        messages = self.messages
        while messages and messages[0][0] < now:
            messages.popleft()


class InMemoryChannelLayer(BaseChannelLayer):
    """A channel layer in this process's memory: no network, no serialisation.

    Takes the configuration keys of :class:`BaseChannelLayer`. Messages are lost when
    the process exits and are not seen by other processes; use the Redis layer to
    share work between processes.
    """

    crosses_processes = False

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._queues: dict[str, _Queue] = {}
        #: group -> {channel: (expires_at, local prefix or "")}: the prefix is parsed once
        #: per group_add, not on every group send.
        self._groups: dict[str, dict[str, tuple[float, str]]] = {}
        self._receivable: set[str] = set()
        self._turn = 0
        self._sweep_at = _SWEEP_MIN
        self._sent = 0
        self._full = 0
        self._rate_mark = _RateMark(monotonic())

    # -- sending -----------------------------------------------------------

    def _send(self, channel: str, message: dict) -> None:
        self._deliver(channel, copy_message(message, self.max_message_size), monotonic())

    def _send_owned(self, channel: str, message: dict, checked: bool) -> None:
        if not checked:
            check_message(message, self.max_message_size)
        self._deliver(channel, message, monotonic())

    def _deliver(self, channel: str, message: dict, now: float) -> None:
        """Queue an already copied message, or hand it to a parked receiver."""
        name = non_local_name(channel) if "!" in channel else channel
        queue = self._queues.get(name) or self._open(name)
        if not (queue.receivers and queue.hand_over(channel, message)):
            messages = queue.messages
            if len(messages) >= queue.capacity:
                queue.drop_expired(now)
                if len(messages) >= queue.capacity:
                    queue.full += 1
                    self._full += 1
                    raise ChannelFull(
                        f"channel {name!r} is full ({queue.capacity} messages): its consumers "
                        "are not keeping up; run more consumers or raise capacity / "
                        "channel_capacity"
                    )
            messages.append((now + self.expiry, channel, message))
            if self._warn_unconsumed:
                self._nothing_consumes(name)
        queue.sent += 1
        self._sent += 1

    def _nothing_consumes(self, name: str) -> None:
        """Say once that a message was queued for consumers that do not run: the project
        is served by a plain WSGI server, which runs no consumer pool."""
        if "!" in name or "?" in name:
            return  # read by whoever made the name, not by a consumer pool
        self._warn_unconsumed = False
        logger.warning(
            "a message was sent on channel %r of the in-memory channel layer, but no "
            "consumer pool runs in this process, so nothing will consume it (the in-memory "
            "layer reaches only this process). Serve the project with geventchannels: "
            "gunicorn -k geventchannels.gunicorn.Worker, manage.py runserver with "
            "'geventchannels' in INSTALLED_APPS, or geventchannels serve; or use the Redis "
            "layer and run manage.py runworker. This warning is shown once.",
            name,
        )

    def _open(self, name: str) -> _Queue:
        queues = self._queues
        if len(queues) >= self._sweep_at:
            self._sweep()
        queue = queues[name] = _Queue(self.get_capacity(name), "?" in name, monotonic())
        return queue

    def _sweep(self) -> None:
        """Forget single-reader channels that only hold expired messages (a reply nobody
        came for). Runs when the number of channels has doubled, so it costs O(1) per
        new channel on average."""
        now = monotonic()
        for name, queue in list(self._queues.items()):
            if queue.transient:
                queue.drop_expired(now)
                self._forget_if_idle(name, queue)
        self._sweep_at = max(_SWEEP_MIN, 2 * len(self._queues))

    def _forget_if_idle(self, name: str, queue: _Queue) -> None:
        """Drop a drained single-reader ('?') channel so one-off reply channels do not
        pile up; its statistics go with it."""
        if not queue.messages and self._queues.get(name) is queue and not queue.has_receivers():
            del self._queues[name]

    # -- receiving ---------------------------------------------------------

    def receive(
        self, channels: Iterable[str], block: bool = False, timeout: float | None = None
    ) -> tuple[str | None, dict | None]:
        """Return ``(channel, message)`` from one of ``channels``, or ``(None, None)``.

        The channel tried first rotates between calls, so a busy channel cannot starve
        the others. With ``block=True`` the greenlet waits (up to ``timeout`` seconds,
        ``None`` for ever) and the next send to any of the channels wakes it.
        """
        names = channels
        if type(names) is not list:
            if isinstance(names, str):
                raise TypeError(
                    f"receive() takes a list of channel names, not a str: use [{names!r}]"
                )
            names = list(names)
        count = len(names)
        if not count:
            raise ValueError("receive() needs at least one channel name")
        try:
            known = self._receivable.issuperset(names)
        except TypeError:  # an unhashable "name": let the name check explain
            known = False
        if not known:
            self._check_receivable(names)

        queues = self._queues
        if count == 1:
            order: Iterable[str] = names
        else:
            start = self._turn % count
            self._turn = start + 1
            order = names[start:] + names[:start] if start else names
        for name in order:
            queue = queues.get(name)
            if queue is None or not queue.messages:
                continue
            messages = queue.messages
            now = monotonic()
            while messages:
                expires, channel, message = messages.popleft()
                if expires >= now:
                    if queue.transient and not messages:
                        self._forget_if_idle(name, queue)
                    return channel, message

        if not block or (timeout is not None and timeout <= 0):
            return None, None
        return self._wait(names, timeout)

    def _check_receivable(self, names: list[str]) -> None:
        receivable = self._receivable
        for name in names:
            self.valid_channel_name(name, receive=True)
            if len(receivable) < _NAME_CACHE_SIZE:
                receivable.add(name)

    def _wait(self, names: list[str], timeout: float | None) -> tuple[str | None, dict | None]:
        hub = get_hub()
        receiver = _Receiver(hub)
        queues = self._queues
        transient = []
        for name in names:
            queue = queues.get(name) or self._open(name)
            if len(queue.receivers) >= queue.receivers_limit:
                queue.sweep_receivers()
            queue.receivers.append(receiver)
            if queue.transient:
                transient.append((name, queue))
        timer = None
        if timeout is not None:
            timer = hub.loop.timer(timeout)
            timer.start(receiver.waiter.switch, None)
        try:
            receiver.waiter.get()
        except BaseException:
            # Killed while parked: a message already handed over goes back to its channel.
            result, receiver.result = receiver.result, _GONE
            if result is not None and result is not _GONE:
                self._requeue(*result)
            raise
        else:
            result = receiver.result
            if result is None:
                result = receiver.result = _GONE
        finally:
            if timer is not None:
                timer.close()
            for name, queue in transient:
                self._forget_if_idle(name, queue)
        return result

    def _requeue(self, channel: str, message: dict) -> None:
        name = non_local_name(channel)
        queue = self._queues.get(name) or self._open(name)
        if not queue.hand_over(channel, message):
            queue.messages.appendleft((monotonic() + self.expiry, channel, message))

    # -- groups ------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` for ``group_expiry`` seconds (renewed by each add)."""
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        prefix = non_local_name(channel) if "!" in channel else ""
        self._groups.setdefault(group, {})[channel] = (monotonic() + self.group_expiry, prefix)
        if prefix:
            self.memberships.joined(group, channel)

    def group_discard(self, group: str, channel: str) -> None:
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._groups[group]
        if "!" in channel:
            self.memberships.left(group, channel)

    def group_channels(self, group: str) -> list[str]:
        self.valid_group_name(group)
        return list(self._members(group, monotonic()))

    def _members(self, group: str, now: float) -> dict[str, tuple[float, str]]:
        """The group's unexpired members (expired ones are removed on the way)."""
        members = self._groups.get(group)
        if not members:
            return {}
        expired = [channel for channel, (until, _) in members.items() if until < now]
        for channel in expired:
            del members[channel]
        if not members:
            del self._groups[group]
        return members

    def send_group(self, group: str, message: dict) -> None:
        """Send ``message`` to every member of ``group``. Full members are skipped, never
        raised about: a group send reaches whoever can take it.

        Members with a local handler (the server's sockets) share one copy, which
        handlers only read; each queued member gets a copy of its own, which its
        consumer may change.
        """
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, got {type(message).__name__}")
        self.valid_group_name(group)
        limit = self.max_message_size
        spare: dict | None = copy_message(message, limit)  # checked even for no members
        shared = None
        handlers = self._local_handlers
        now = monotonic()
        members = self._groups.get(group) or {}
        expired = []
        for channel, (until, prefix) in list(members.items()):
            if until < now:
                expired.append(channel)
                continue
            handler = handlers.get(prefix)
            try:
                if handler is not None:
                    if shared is None:
                        shared = spare if spare is not None else copy_message(message, limit)
                        spare = None
                    handler(channel, shared)
                else:
                    copy = spare if spare is not None else copy_message(message, limit)
                    spare = None
                    self._deliver(channel, copy, now)
            except ChannelFull:
                pass
            except Exception:
                logger.exception(
                    "group %r: delivery to %r failed; other members still get the message",
                    group,
                    channel,
                )
        for channel in expired:
            members.pop(channel, None)
        if expired and not members:
            self._groups.pop(group, None)

    # -- flush and statistics ----------------------------------------------

    def flush(self) -> None:
        """Drop every message, group and counter. Receivers parked right now stay parked."""
        for name, queue in list(self._queues.items()):
            if queue.has_receivers():
                queue.messages.clear()
                queue.sent = queue.full = 0
                queue.rate_mark = _RateMark(monotonic())
            else:
                del self._queues[name]
        self._groups.clear()
        self.memberships.forget()
        self._sent = self._full = 0
        self._rate_mark = _RateMark(monotonic())

    def close(self) -> None:
        """Wake every parked receiver with ``(None, None)`` so shutdown does not hang on them."""
        for queue in self._queues.values():
            for receiver in queue.receivers:
                if receiver.result is None:
                    receiver.result = _GONE
                    receiver.hub.loop.run_callback(receiver.waiter.switch, None)
            queue.receivers.clear()

    def global_statistics(self) -> dict[str, float]:
        """Counters of the whole layer. Per-second rates are averaged since the previous
        ``global_statistics`` call (or since the layer started or was flushed)."""
        now = monotonic()
        pending = 0
        oldest = now
        for queue in self._queues.values():
            queue.drop_expired(now)
            if queue.messages:
                pending += len(queue.messages)
                oldest = min(oldest, queue.messages[0][0] - self.expiry)
        local, waited = self.local_backlog()
        age = max(now - oldest, waited)
        stats = self._statistics(self._sent, self._full, self._rate_mark, pending + local, age, now)
        return {**stats, **self.extra_statistics()}

    def channel_statistics(self, channel: str) -> dict[str, float]:
        """Counters of one channel (a process-local name reports its shared queue), with
        the messages the consumer pool of this process took without the layer. Per-second
        rates are averaged since the previous call for that channel."""
        self.valid_channel_name(channel)
        now = monotonic()
        queue = self._queues.get(non_local_name(channel))
        local, waited = self.local_backlog(channel)
        if queue is None:
            return self._statistics(0, 0, _RateMark(now), local, waited, now)
        queue.drop_expired(now)
        messages = queue.messages
        age = now - (messages[0][0] - self.expiry) if messages else 0.0
        return self._statistics(
            queue.sent, queue.full, queue.rate_mark, len(messages) + local, max(age, waited), now
        )

    def count_local(self, channel: str, full: bool = False) -> None:
        queue = self._queues.get(channel) or self._open(channel)
        if full:
            queue.full += 1
            self._full += 1
        else:
            queue.sent += 1
            self._sent += 1

    @staticmethod
    def _statistics(
        sent: int, full: int, mark: _RateMark, pending: int, age: float, now: float
    ) -> dict[str, float]:
        sent_rate, full_rate = mark.rates(now, sent, full)
        return {
            "messages_count": sent,
            "messages_count_per_second": sent_rate,
            "messages_pending": pending,
            "messages_max_age": max(0.0, age),
            "channel_full_count": full,
            "channel_full_count_per_second": full_rate,
        }
