"""RedisChannelLayer: the ASGI 1.0 layer over one or more Redis shards."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

import gevent

from ...exceptions import ChannelFull
from ..base import BaseChannelLayer, LocalHandler, non_local_name
from ..copying import check_message, copy_message
from . import stored
from .connections import BLOCK_SECONDS, UNREACHABLE
from .hosts import Host, ShardFactory
from .memberships import RedisMemberships
from .receiving import Fetchers, KeysByShard, drain_local, receive_now
from .shards import GroupSend, Shard, Skipped


class RedisChannelLayer(BaseChannelLayer):
    """ASGI 1.0 channel layer on Redis, for several processes or machines.

    Besides the keywords of BaseChannelLayer:

    - ``hosts``: list of ``redis://`` / ``rediss://`` / ``unix://`` URLs, ``(host, port)``
      pairs, or ``redis+sentinel://h1:26379,h2:26379/service/db`` URLs; one shard each.
    - ``prefix``: prepended to every key; ``flush()`` deletes only keys under it.
    - ``symmetric_encryption_keys``: list of secrets; messages are encrypted with the first
      and decrypted with any (Fernet), so keys can be rotated.
    - ``connection_kwargs``: passed to redis-py's clients (password, ssl, timeouts...),
      over bounded socket timeouts by default (hosts.SOCKET_DEFAULTS).
    - ``sentinels`` + ``service_name`` (a name or list of names, one shard each) and
      ``sentinel_kwargs``: Redis Sentinel without URLs.
    - ``cluster=True``: ``hosts`` are start-up nodes of one Redis Cluster.
    - ``max_connections``: per shard, for quick commands (greenlets wait for a free one).
    - ``max_fetchers``: per shard, blocking connections used by receivers.
    """

    crosses_processes = True

    def __init__(
        self,
        hosts: Sequence[Host] | None = None,
        prefix: str = "asgi:",
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        connection_kwargs: dict[str, Any] | None = None,
        sentinels: Sequence[tuple[str, int]] | None = None,
        service_name: str | Sequence[str] | None = None,
        sentinel_kwargs: dict[str, Any] | None = None,
        cluster: bool = False,
        max_connections: int = 50,
        max_fetchers: int = 8,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        self.prefix = prefix
        #: SCAN pattern of every key of this layer (the prefix with glob characters escaped).
        self._pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        self.cluster = cluster
        self._codec = stored.Codec(symmetric_encryption_keys)
        factory = ShardFactory(
            connection_kwargs, max_connections, max_fetchers, prefix, max(1, int(self.expiry) + 1)
        )
        self.shards = factory.build(hosts, sentinels, service_name, sentinel_kwargs or {}, cluster)
        self._shard_cache: dict[str, Shard] = {}
        self._fetchers = Fetchers(self._codec.read_one)
        self._drains: dict[str, gevent.Greenlet] = {}
        self._turn = 0
        self.memberships: RedisMemberships = RedisMemberships(self)

    @property
    def codec(self) -> stored.Codec:
        """How this layer's messages become stored bytes and back (with its keys)."""
        return self._codec

    def shard_for(self, list_name: str) -> Shard:
        """The shard that holds ``list_name`` (a channel, or a process-local prefix)."""
        return self._shard_for(list_name)

    def _shard_for(self, list_name: str) -> Shard:
        """Rendezvous hashing: the shard whose hash with the name is highest, so adding a
        host moves only the channels that land on it."""
        if len(self.shards) == 1:
            return self.shards[0]
        shard = self._shard_cache.get(list_name)
        if shard is None:
            encoded = list_name.encode()
            shard = max(
                self.shards,
                key=lambda s: hashlib.blake2b(s.identity + encoded, digest_size=8).digest(),
            )
            if len(self._shard_cache) < 100_000:
                self._shard_cache[list_name] = shard
        return shard

    # -- sending -----------------------------------------------------------

    def _send(self, channel: str, message: dict) -> None:
        # copy_message checks value and key types the way every layer does; msgpack alone
        # would accept int keys and sets that the receiving side then rejects.
        self._store(channel, self._codec.encode(copy_message(message, self.max_message_size)))

    def _send_owned(self, channel: str, message: dict, checked: bool) -> None:
        # Encoding is a copy already: the caller's dict needs no other.
        if not checked:
            check_message(message, self.max_message_size)
        self._store(channel, self._codec.encode(message))

    def _store(self, channel: str, payload: bytes) -> None:
        list_name = non_local_name(channel)
        shard = self._shard_for(list_name)
        now = time.time()
        item = stored.entry(payload, now + self.expiry, channel)
        try:
            pushed = shard.store(list_name, item, self.get_capacity(list_name), now)
        except UNREACHABLE as error:
            raise shard.unavailable(error) from None
        if not pushed:
            raise ChannelFull(
                f"channel {channel!r} is full (capacity {self.get_capacity(list_name)}): "
                "run more consumers or raise capacity / channel_capacity"
            )

    # -- receiving ---------------------------------------------------------

    def receive(
        self, channels: Iterable[str], block: bool = False, timeout: float | None = None
    ) -> tuple[str | None, dict | None]:
        batch = self.receive_batch(channels, 1, block, timeout)
        return batch[0] if batch else (None, None)

    def receive_batch(
        self,
        channels: Iterable[str],
        count: int,
        block: bool = False,
        timeout: float | None = None,
    ) -> list[tuple[str, dict]]:
        """Up to ``count`` messages in one pop (one blocking pop when ``block``)."""
        by_shard = self._keys_by_shard(channels)
        if not by_shard:
            # Only prefixes whose drain feeds a local handler: nothing to receive here.
            if block and (timeout is None or timeout > 0):
                gevent.sleep(BLOCK_SECONDS if timeout is None else timeout)
            return []
        if not block or (timeout is not None and timeout <= 0):
            return receive_now(by_shard, self._codec.read_one, count)
        return self._fetchers.wait(by_shard, timeout, count)

    def _keys_by_shard(self, channels: Iterable[str]) -> KeysByShard:
        if isinstance(channels, str):
            raise TypeError(
                f"receive() takes a list of channel names, not a str: use [{channels!r}]"
            )
        channels = list(channels)
        if not channels:
            raise ValueError("receive() needs at least one channel name")
        if len(channels) > 1:
            # Rotate the first channel tried so that a busy channel cannot starve the others.
            self._turn = (self._turn + 1) % len(channels)
            channels = channels[self._turn :] + channels[: self._turn]
        by_shard: dict[Shard, dict[str, str]] = {}
        for channel in channels:
            self.valid_channel_name(channel, receive=True)
            if channel in self._drains:
                continue  # its drain greenlet hands these to the attached handler, in order
            shard = self._shard_for(channel)
            by_shard.setdefault(shard, {})[shard.list_key(channel)] = channel
        return by_shard

    # -- process-local delivery ----------------------------------------------

    def attach_local(self, prefix: str, handler: LocalHandler) -> None:
        """Deliver ``prefix``'s messages to ``handler``: sends from this process directly,
        sends from other processes through a drain greenlet that pops the prefix's list."""
        super().attach_local(prefix, handler)
        old = self._drains.pop(prefix, None)
        if old is not None:
            old.kill()
        self._drains[prefix] = gevent.spawn(
            drain_local, self._shard_for(prefix), prefix, self._local_handlers, self._codec.read
        )

    def detach_local(self, prefix: str) -> None:
        super().detach_local(prefix)
        drain = self._drains.pop(prefix, None)
        if drain is not None:
            drain.kill()

    # -- groups ------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        list_name = non_local_name(channel)
        shard = self._shard_for(list_name)
        group_key, capacities_key = shard.group_key(group), shard.capacities_key(group)
        ttl = max(1, int(self.group_expiry) + 1)
        pipe = shard.client.pipeline(transaction=False)
        pipe.zadd(group_key, {channel: time.time()})
        pipe.hset(capacities_key, channel, self.get_capacity(list_name))
        pipe.expire(group_key, ttl)
        pipe.expire(capacities_key, ttl)
        self.memberships.index_join(pipe, group, channel)
        self._execute(shard, pipe)
        self.memberships.joined(group, channel)

    def group_discard(self, group: str, channel: str) -> None:
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        shard = self._shard_for(non_local_name(channel))
        pipe = shard.client.pipeline(transaction=False)
        pipe.zrem(shard.group_key(group), channel)
        pipe.hdel(shard.capacities_key(group), channel)
        self.memberships.index_leave(pipe, group, channel)
        self._execute(shard, pipe)
        self.memberships.left(group, channel)

    def group_channels(self, group: str) -> list[str]:
        self.valid_group_name(group)
        cutoff = time.time() - self.group_expiry
        members: list[str] = []
        for shard in self.shards:
            try:
                found = shard.client.zrangebyscore(shard.group_key(group), cutoff, "+inf")
            except UNREACHABLE as error:
                raise shard.unavailable(error) from None
            members.extend(m.decode() for m in found)
        return members

    @staticmethod
    def _execute(shard: Shard, pipe: Any) -> list:
        try:
            return pipe.execute()
        except UNREACHABLE as error:
            raise shard.unavailable(error) from None

    def send_group(self, group: str, message: dict) -> None:
        """Send to every member with room (full ones are skipped, never ChannelFull):
        one script call per shard, run concurrently; members whose prefix is attached in
        this process get the message directly."""
        self.valid_group_name(group)
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, got {type(message).__name__}")
        copied = copy_message(message, self.max_message_size)
        now = time.time()
        send = GroupSend(
            group,
            self._codec.encode(copied),
            now,
            now + self.expiry,
            now - self.group_expiry,
            self._local_handlers,
            self.get_capacity,
        )
        if len(self.shards) == 1:
            outcomes = [self._send_group_on(self.shards[0], send)]
        else:
            jobs = [gevent.spawn(self._send_group_on, shard, send) for shard in self.shards]
            gevent.joinall(jobs)
            outcomes = [job.value if job.successful() else job.exception for job in jobs]
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            for prefix, suffixes in outcome:
                handler = self._local_handlers.get(prefix)
                if handler is not None:
                    for suffix in suffixes:
                        handler(prefix + suffix, copied)  # read-only, so one copy for all

    @staticmethod
    def _send_group_on(shard: Shard, send: GroupSend) -> Skipped:
        """Send to the group's members on ``shard``; returns the members left to this
        process's local handlers as (prefix, [parts after the prefix])."""
        try:
            return shard.send_group(send)
        except UNREACHABLE as error:
            raise shard.unavailable(error) from None

    # -- flush, statistics, close -------------------------------------------

    def flush(self) -> None:
        """Delete every key under this layer's prefix (never other keys in the database)."""
        self.memberships.forget()
        for shard in self.shards:
            shard.tally.take()  # this process's counts not yet in Redis go too
            try:
                batch = []
                for key in shard.client.scan_iter(match=self._pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        shard.unlink(batch)
                        batch = []
                if batch:
                    shard.unlink(batch)
            except UNREACHABLE as error:
                raise shard.unavailable(error) from None

    def count_local(self, channel: str, full: bool = False) -> None:
        self._shard_for(channel).count(channel, 0 if full else 1, 1 if full else 0, time.time())

    def _flush_statistics(self) -> None:
        """What this process counted goes to Redis before it reads statistics."""
        for shard in self.shards:
            try:
                shard.flush_statistics()
            except UNREACHABLE as error:
                raise shard.unavailable(error) from None

    def channel_statistics(self, channel: str) -> dict[str, float]:
        """Counters kept in Redis (every process's), plus the messages this process's
        consumer pool took without the layer and has not run yet."""
        self.valid_channel_name(channel)
        list_name = non_local_name(channel)
        shard = self._shard_for(list_name)
        self._flush_statistics()
        try:
            counters = shard.client.hgetall(shard.stats_key(list_name))
            pending, head = shard.peek(shard.list_key(list_name), time.time())
        except UNREACHABLE as error:
            raise shard.unavailable(error) from None
        stats = stored.counters(counters, time.time())
        local, waited = self.local_backlog(channel)
        stats["messages_pending"] = pending + local
        stats["messages_max_age"] = max(self._age(head), waited)
        return stats

    def global_statistics(self) -> dict[str, float]:
        """Counters kept in Redis, plus pending messages and the oldest one's age found
        by a SCAN of this prefix's lists: meant for monitoring, not for every request."""
        self._flush_statistics()
        local, waited = self.local_backlog()
        totals: dict[str, float] = {"messages_pending": local, "messages_max_age": waited}
        counted: dict[str, float] = {}
        for shard in self.shards:
            try:
                raw = shard.client.hgetall(self.prefix + "stats:")
                for name, value in stored.counters(raw, time.time()).items():
                    counted[name] = counted.get(name, 0) + value
                # Only channels are lists: counters are hashes and groups sorted sets.
                keys = list(shard.client.scan_iter(match=self._pattern, count=1000, _type="list"))
                replies = shard.peek_all(keys, time.time)
            except UNREACHABLE as error:
                raise shard.unavailable(error) from None
            for pending, head in replies:
                totals["messages_pending"] += pending
                totals["messages_max_age"] = max(totals["messages_max_age"], self._age(head))
        return {**stored.counters({}, time.time()), **counted, **totals, **self.extra_statistics()}

    def _age(self, head: bytes | None) -> float:
        if not head:
            return 0
        return max(0.0, time.time() - (stored.expires_at(head) - self.expiry))

    def close(self) -> None:
        """Stop the fetcher and drain greenlets, wake waiting receivers, disconnect."""
        self.memberships.stop()
        greenlets = list(self._drains.values())
        self._drains.clear()
        greenlets.extend(self._fetchers.close())
        gevent.killall(greenlets, timeout=5)
        for shard in self.shards:
            shard.close()

    def __repr__(self) -> str:
        hosts = ", ".join(s.label for s in self.shards)
        return f"<RedisChannelLayer {hosts} prefix={self.prefix!r}>"
