"""Taking messages out of Redis: non-blocking receives, blocking receives that share one
fetcher per set of channels, and the drains that feed attached local handlers.

Receiving blocks inside Redis (BLMPOP). Greenlets that wait on the same channels share one
fetcher greenlet and one connection; it pops only as many messages as the waiting
greenlets asked for (one each, or a batch: the consumer pool asks for as many as it has
free consumers), so nothing leaves Redis without a receiver (at-most-once, little loss on
a crash). A process-local prefix attached with ``attach_local`` gets a drain greenlet that
pops its list in batches and calls the handler, once per member of a fan-out entry with
one shared decoded message.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import gevent
from gevent.event import AsyncResult

from ..base import LocalHandler
from . import stored
from .connections import BLOCK_SECONDS, UNREACHABLE, Backoff
from .shards import Shard

log = logging.getLogger("geventchannels.layers.redis")

#: Most messages a local drain pops in one call.
DRAIN_BATCH = 100

#: (list name, stored entry) -> (channel, message), or None for an expired or unreadable one.
ReadOne = Callable[[str, bytes], "tuple[str, dict] | None"]
#: (list name, stored entry) -> (channels, message), or None.
Read = Callable[[str, bytes], "tuple[list[str], dict] | None"]
#: Per shard, the list keys to receive from and the channel each one is.
KeysByShard = Mapping[Shard, dict[str, str]]

#: (channel, message) pairs received.
Batch = list[tuple[str, dict]]
#: What a waiter is handed: its messages, and where they came from (shard, key, entries)
#: to put them back if it is killed before it returns them.
Handed = tuple[Batch, Any, Any, list[bytes]]
_NOTHING: Handed = ([], None, None, [])


def receive_now(by_shard: KeysByShard, read_one: ReadOne, count: int = 1) -> Batch:
    """Up to ``count`` messages waiting on the keys, without blocking."""
    batch: Batch = []
    for shard, keys in by_shard.items():
        for _ident, subset in shard.fetch_groups(keys):
            while len(batch) < count:
                try:
                    popped = shard.pop_now(list(subset), count - len(batch))
                except UNREACHABLE as error:
                    raise shard.unavailable(error) from None
                if not popped:
                    break
                key, items = popped
                key = key.decode() if isinstance(key, bytes) else key
                items = stored.split_fanout_entries(subset[key], items)
                for index, item in enumerate(items):
                    received = read_one(subset[key], item)
                    if received is not None:
                        batch.append(received)
                        if len(batch) >= count:
                            if index + 1 < len(items):
                                shard.push_back(key, items[index + 1 :])
                            return batch
    return batch


class Waiter:
    """One greenlet blocked in receive(): the fetchers of its channels hand it up to
    ``wanted`` messages, all at once."""

    __slots__ = ("result", "deadline", "wanted")

    def __init__(self, deadline: float | None, wanted: int = 1):
        self.result = AsyncResult()
        self.deadline = deadline
        self.wanted = wanted

    @property
    def waiting(self) -> bool:
        return not self.result.ready()


class Fetchers:
    """The fetchers of one layer, one per shard and set of keys being waited on."""

    def __init__(self, read_one: ReadOne):
        self._read_one = read_one
        self._fetchers: dict[Any, Fetcher] = {}

    def __len__(self) -> int:
        return len(self._fetchers)

    def wait(self, by_shard: KeysByShard, timeout: float | None, count: int = 1) -> Batch:
        """Wait up to ``timeout`` seconds (None: for ever) for messages on the keys; up to
        ``count`` of them."""
        waiter = Waiter(None if timeout is None else time.monotonic() + timeout, count)
        joined = []
        for shard, keys in by_shard.items():
            for ident, subset in shard.fetch_groups(keys):
                fetcher = self._fetchers.get(ident)
                if fetcher is None:
                    fetcher = self._fetchers[ident] = Fetcher(
                        shard, subset, ident, self._read_one, self._retire
                    )
                fetcher.add(waiter)
                joined.append(fetcher)
        try:
            waiter.result.get(timeout=timeout)
        except gevent.Timeout:
            pass  # a message handed over as the timer fired is still returned below
        except BaseException:
            # Killed after a fetcher handed us messages: they go back to the head of their list.
            if waiter.result.successful() and waiter.result.value[3]:
                _batch, shard, key, items = waiter.result.value
                shard.push_back(key, items)
            raise
        finally:
            for fetcher in joined:
                fetcher.remove(waiter)
        if waiter.result.successful():
            return waiter.result.value[0]
        return []

    def _retire(self, fetcher: Fetcher) -> None:
        if self._fetchers.get(fetcher.ident) is fetcher:
            del self._fetchers[fetcher.ident]

    def close(self) -> list[gevent.Greenlet]:
        """Wake every waiting receiver with nothing; the fetcher greenlets to kill."""
        greenlets = []
        for fetcher in list(self._fetchers.values()):
            for waiter in fetcher.waiters:
                if waiter.waiting:
                    waiter.result.set(_NOTHING)
            if fetcher.greenlet is not None:
                greenlets.append(fetcher.greenlet)
        self._fetchers.clear()
        return greenlets


class Fetcher:
    """The one greenlet that blocks in Redis for every receiver of one set of keys on one
    shard, popping at most as many messages as receivers wait."""

    def __init__(
        self,
        shard: Shard,
        keys: dict[str, str],
        ident: Any,
        read_one: ReadOne,
        retire: Callable[[Fetcher], None],
    ):
        self.shard = shard
        self.keys = list(keys)
        self.list_names = keys
        self.ident = ident
        self._read_one = read_one
        self._retire = retire
        self.waiters: deque[Waiter] = deque()
        self.greenlet: gevent.Greenlet | None = None

    def add(self, waiter: Waiter) -> None:
        self.waiters.append(waiter)
        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._run)

    def remove(self, waiter: Waiter) -> None:
        try:
            self.waiters.remove(waiter)
        except ValueError:
            pass

    def _live(self) -> int:
        while self.waiters and not self.waiters[0].waiting:
            self.waiters.popleft()
        return sum(waiter.wanted for waiter in self.waiters if waiter.waiting)

    def _live_soon(self) -> int:
        """Messages the live waiters want, giving a receiver that just got its messages
        one turn to come back for more (the consumer pool receives from a single greenlet
        in a loop)."""
        count = self._live()
        if not count:
            gevent.sleep(0)
            count = self._live()
        return count

    def _run(self) -> None:
        backoff = Backoff()
        try:
            with self.shard.fetch_slots:
                while (count := self._live_soon()) > 0:
                    popped = self.shard.pop_waiting(
                        self.keys, self._block_time(), count, backoff, "receiving"
                    )
                    if popped:
                        self._hand_over(*popped)
                    if len(self.keys) > 1:
                        self.keys.append(self.keys.pop(0))
        finally:
            self.greenlet = None
            if not any(waiter.waiting for waiter in self.waiters):
                self._retire(self)

    def _block_time(self) -> float:
        deadlines = [w.deadline for w in self.waiters if w.waiting]
        if None in deadlines:
            return BLOCK_SECONDS
        latest = max(d for d in deadlines if d is not None)
        return min(BLOCK_SECONDS, max(0.01, latest - time.monotonic()))

    def _hand_over(self, key: bytes | str, items: list[bytes]) -> None:
        key = key.decode() if isinstance(key, bytes) else key
        list_name = self.list_names[key]
        unclaimed = []
        waiter: Waiter | None = None
        batch: Batch = []
        taken: list[bytes] = []
        for item in stored.split_fanout_entries(list_name, items):
            received = self._read_one(list_name, item)
            if received is None:
                continue
            if waiter is None:
                while self.waiters and not self.waiters[0].waiting:
                    self.waiters.popleft()
                if not self.waiters:
                    unclaimed.append(item)
                    continue
                waiter = self.waiters.popleft()
            batch.append(received)
            taken.append(item)
            if len(batch) >= waiter.wanted:
                waiter.result.set((batch, self.shard, key, taken))
                waiter, batch, taken = None, [], []
        if waiter is not None:
            waiter.result.set((batch, self.shard, key, taken))
        if unclaimed:
            # Every receiver left while we were blocked: put the messages back at the head.
            self.shard.push_back(key, unclaimed)


def drain_local(
    shard: Shard, prefix: str, handlers: Mapping[str, LocalHandler], read: Read
) -> None:
    """Feed what other processes store for ``prefix`` to ``handlers[prefix]``, in order,
    for ever (run it in a greenlet; kill it to stop)."""
    key = shard.list_key(prefix)
    backoff = Backoff()
    while True:
        popped = shard.pop_waiting([key], BLOCK_SECONDS, DRAIN_BATCH, backoff, "draining " + prefix)
        if not popped:
            continue
        for item in popped[1]:
            decoded = read(prefix, item)
            handler = handlers.get(prefix)
            if decoded is None or handler is None:
                continue
            channels, message = decoded
            for channel in channels:  # a fan-out entry's members share one message
                try:
                    handler(channel, message)
                except Exception:
                    log.exception("local handler for %s failed on a message to %s", prefix, channel)
            if len(channels) > 1:
                gevent.sleep(0)  # let the sockets just handed a message write it
