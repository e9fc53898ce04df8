"""Memberships and presence on Redis: what lets any live process purge the members of a
process that died, and what a process re-asserts when Redis lost them.

Keys (``P`` is the layer's prefix; everything about the channels of one process-local
prefix lives on that prefix's shard, where group_add puts its memberships too):

- ``P owned:<prefix>``: a set of entries ``"g <group> <channel>"`` and
  ``"p <presence> <channel>"``, one per membership of a channel under ``<prefix>``, written
  by whoever adds it: a purge reads it to know what to remove;
- ``P remote:<prefix>``: a list of ``"+g ..."`` / ``"-g ..."`` / ``"+p ..."`` / ``"-p ..."``,
  the changes that processes other than the owner made (a separate ``runworker``), until
  the owner reads them into its own bookkeeping;
- ``P presence:<name>``: a hash, member channel -> its meta, events channel and join time
  (sealed like a message, so encrypted when the layer is);
- ``P leases``: the processes' leases (leases.py and leases.lua).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent.pool

from ... import conf
from ..base import non_local_name
from ..membership import Memberships, Tracked
from . import stored
from .connections import UNREACHABLE
from .leases import LeaseKeeper
from .shards import Shard

if TYPE_CHECKING:
    from .layer import RedisChannelLayer

logger = logging.getLogger("geventchannels.groups")

#: A presence record never expires as a message would; its key expires like a group's.
FOREVER = 1e18
#: Commands per pipeline in a purge.
PURGE_BATCH = 1000
#: Layer calls run side by side when memberships are re-asserted.
REASSERT_CONCURRENCY = 20
#: Changes by other processes read per round.
REMOTE_BATCH = 1000


def entry(kind: str, name: str, channel: str) -> str:
    """One line of an ``owned`` set: a membership of ``channel`` in group or presence
    ``name`` (names hold no spaces)."""
    return f"{kind} {name} {channel}"


class RedisMemberships(Memberships):
    """Memberships whose presences and index live in Redis, kept true by a lease."""

    layer: RedisChannelLayer

    def __init__(self, layer: RedisChannelLayer):
        super().__init__(layer)
        self.keeper: LeaseKeeper | None = None
        #: Channels whose leaving failed (Redis unreachable): retried each lease round.
        self.unclean: dict[str, tuple[set[str], dict[str, Tracked]]] = {}

    def key(self, kind: str, name: str) -> str:
        return f"{self.layer.prefix}{kind}:{name}"

    def shard(self, channel: str) -> Shard:
        return self.layer._shard_for(non_local_name(channel))

    @property
    def key_ttl(self) -> int:
        return max(1, int(self.layer.group_expiry) + 1)

    def execute(self, shard: Shard, pipe: Any) -> list:
        try:
            return pipe.execute()
        except UNREACHABLE as error:
            raise shard.unavailable(error) from None

    # -- the server's side ------------------------------------------------------------------

    def serve(self, prefix: str, is_open: Callable[[str], bool], overrides: Any = None) -> None:
        """Serve ``prefix``, taking a lease for it at once."""
        super().serve(prefix, is_open, overrides)
        if self.keeper is None:
            self.keeper = LeaseKeeper(self, conf.get("GROUP_LEASE_TIMEOUT", overrides))
        self.keeper.wake()

    def release(self, prefix: str) -> None:
        """Stop serving ``prefix``: its channels leave everything, then whatever other
        processes added for them is purged and the lease returned."""
        keeper = self.keeper
        super().release(prefix)
        if keeper is None:
            return
        try:
            keeper.release(prefix)
        except Exception as error:
            logger.warning("the lease of %s was not released (%s): it expires", prefix, error)

    def stop(self) -> None:
        super().stop()
        if self.keeper is not None:
            self.keeper.stop()
            self.keeper = None

    def leave_failed(
        self, channel: str, groups: set[str], tracked: dict[str, Tracked], error: Exception
    ) -> None:
        super().leave_failed(channel, groups, tracked, error)
        self.unclean[channel] = (groups, tracked)

    def retry_unclean(self) -> None:
        unclean, self.unclean = self.unclean, {}
        for channel, (groups, tracked) in unclean.items():
            self.leave_all(channel, groups, tracked)

    def forget(self) -> None:
        super().forget()
        self.unclean.clear()

    def run_all(self, jobs: list[Callable[[], None]]) -> None:
        """Each job is a round trip: run them side by side."""
        if len(jobs) < 2:
            super().run_all(jobs)
            return
        pool = gevent.pool.Pool(REASSERT_CONCURRENCY)
        for _ in pool.imap_unordered(lambda job: job(), jobs):
            pass

    # -- the index, from the layer's group_add and group_discard ------------------------------

    def index_join(self, pipe: Any, group: str, channel: str) -> None:
        """Add to ``pipe`` (group_add's) what records this membership for a purge."""
        if "!" in channel:
            self._index(pipe, channel, entry("g", group, channel), True)

    def index_leave(self, pipe: Any, group: str, channel: str) -> None:
        if "!" in channel:
            self._index(pipe, channel, entry("g", group, channel), False)

    def _index(self, pipe: Any, channel: str, line: str, added: bool) -> None:
        prefix = non_local_name(channel)
        owned = self.key("owned", prefix)
        if added:
            pipe.sadd(owned, line)
            pipe.expire(owned, self.key_ttl)
        else:
            pipe.srem(owned, line)
        if prefix not in self.served:
            remote = self.key("remote", prefix)
            pipe.rpush(remote, ("+" if added else "-") + line)
            pipe.expire(remote, self.key_ttl)

    # -- presence in Redis ------------------------------------------------------------------

    def store_track(
        self, name: str, channel: str, meta: dict, events: str, replace: bool = True
    ) -> bool:
        shard = self.shard(channel)
        key = self.key("presence", name)
        pipe = shard.client.pipeline(transaction=False)
        (pipe.hset if replace else pipe.hsetnx)(key, channel, self.seal(meta, events))
        pipe.expire(key, self.key_ttl)
        if "!" in channel:
            self._index(pipe, channel, entry("p", name, channel), True)
        return bool(self.execute(shard, pipe)[0])

    def store_untrack(self, name: str, channel: str) -> Tracked | None:
        shard = self.shard(channel)
        key = self.key("presence", name)
        pipe = shard.client.pipeline(transaction=False)
        pipe.hget(key, channel)
        pipe.hdel(key, channel)
        if "!" in channel:
            self._index(pipe, channel, entry("p", name, channel), False)
        value, removed = self.execute(shard, pipe)[:2]
        record = self.unseal(value) if removed else None
        return None if record is None else (record["meta"], record["events"])

    def members(self, name: str) -> list[dict]:
        key = self.key("presence", name)
        records: list[dict] = []
        for shard in self.layer.shards:
            try:
                values = shard.client.hvals(key)
            except UNREACHABLE as error:
                raise shard.unavailable(error) from None
            records.extend(r for r in map(self.unseal, values) if r is not None)
        records.sort(key=lambda record: record["at"])
        return [record["meta"] for record in records]

    def seal(self, meta: dict, events: str) -> bytes:
        record = {"meta": meta, "events": events, "at": time.time()}
        return stored.entry(self.layer._codec.encode(record), FOREVER)

    def unseal(self, value: bytes | None) -> dict | None:
        """The record ``seal`` made, or None (no value, or unreadable: logged)."""
        opened = None if value is None else self.layer._codec.read("presence", value)
        return None if opened is None else opened[1]

    # -- what other processes changed ---------------------------------------------------------

    def learn_remote(self, prefix: str, is_open: Callable[[str], bool]) -> None:
        """Read into this process's bookkeeping the memberships that other processes added
        to or removed from ``prefix``'s channels; a channel that closed meanwhile leaves
        what it was added to. Changes are dropped from Redis only once applied (applying
        one twice does no harm)."""
        shard = self.layer._shard_for(prefix)
        key = self.key("remote", prefix)
        try:
            raw = shard.client.lrange(key, 0, REMOTE_BATCH - 1)
            if not raw:
                return
            changes = [_parse_change(change.decode()) for change in raw]
            joins = [(n, c) for sign, kind, n, c in changes if sign + kind == "+p" and is_open(c)]
            pipe = shard.client.pipeline(transaction=False)
            for name, channel in joins:
                pipe.hget(self.key("presence", name), channel)
            records = dict(zip(joins, map(self.unseal, pipe.execute()), strict=True))
        except UNREACHABLE as error:
            raise shard.unavailable(error) from None
        for sign, kind, name, channel in changes:
            if kind == "g":
                (self.joined if sign == "+" else self.left)(name, channel)
            elif sign == "-":
                self.tracked.get(channel, {}).pop(name, None)
            elif (name, channel) in records:
                record = records[name, channel]
                if record is not None:
                    self.tracked.setdefault(channel, {})[name] = (record["meta"], record["events"])
            else:
                self.untrack(name, channel)  # it closed before we learnt of it
        try:
            shard.client.ltrim(key, len(raw), -1)
        except UNREACHABLE as error:
            raise shard.unavailable(error) from None

    # -- purging a process that died ------------------------------------------------------------

    def purge(self, shard: Shard, prefix: str) -> int:
        """Remove every membership of ``prefix``'s channels (its process is gone), with a
        leave event for each presence member; returns how many memberships went."""
        owned_key, remote_key = self.key("owned", prefix), self.key("remote", prefix)
        pipe = shard.client.pipeline(transaction=False)
        pipe.smembers(owned_key)
        pipe.lrange(remote_key, 0, -1)
        owned, remote = self.execute(shard, pipe)
        lines = {line.decode() for line in owned}
        lines.update(c.decode()[1:] for c in remote if c.startswith(b"+"))
        memberships = [_parse_change("+" + line)[1:] for line in lines]
        left = 0
        for start in range(0, len(memberships), PURGE_BATCH // 2):
            left += self._remove(shard, memberships[start : start + PURGE_BATCH // 2])
        try:
            shard.unlink([owned_key, remote_key])
        except UNREACHABLE as error:
            raise shard.unavailable(error) from None
        return left

    def _remove(self, shard: Shard, memberships: list[tuple[str, str, str]]) -> int:
        pipe = shard.client.pipeline(transaction=False)
        for kind, name, channel in memberships:
            if kind == "g":
                pipe.zrem(shard.group_key(name), channel)
                pipe.hdel(shard.capacities_key(name), channel)
            else:
                key = self.key("presence", name)
                pipe.hget(key, channel)
                pipe.hdel(key, channel)
        replies = iter(self.execute(shard, pipe))
        left = 0
        for kind, name, channel in memberships:
            first, second = next(replies), next(replies)
            if kind == "g":
                left += bool(first)
                continue
            if not second:
                continue  # someone else took it out (and announced it)
            left += 1
            record = self.unseal(first)
            if record is not None:
                self.announce(name, "leave", channel, record["meta"], record["events"])
        return left


def _parse_change(change: str) -> tuple[str, str, str, str]:
    """("+" or "-", "g" or "p", group or presence name, channel) of a remote change."""
    head, name, channel = change.split(" ", 2)
    return head[0], head[1], name, channel
