"""One Redis of the layer and the commands the layer runs on it: a plain server or a
Sentinel-managed master (Shard), or a whole Redis Cluster (ClusterShard, where keys carry
hash tags and nothing may span two slots).

Layout in Redis (``P`` is the layer's prefix): ``P<channel>`` list of entries (see
stored.py), ``P stats:<channel>`` and ``P stats:`` counters, ``P group:<group>`` sorted set of
members scored by join time and ``P groupcap:<group>`` each member's capacity.

Sends, group sends and non-blocking pops go over the shard's ``quick`` connection, which
pipelines what greenlets send at the same time (connections.Pipelined); a send's counters
are added to Redis in batches (tally.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import redis
from gevent.lock import BoundedSemaphore

from ...exceptions import ChannelLayerUnavailable
from ..base import non_local_name
from . import stored
from .connections import UNREACHABLE, Backoff, Connections
from .tally import FLUSH_SECONDS, Counts, Tally

log = logging.getLogger("geventchannels.layers.redis")

SCRIPT = Path(__file__).with_name("redis_layer.lua").read_text()

#: (list name, the parts after "!" of its members) that this process delivers itself.
Skipped = list[tuple[str, list[str]]]
#: An identity of a set of keys one blocking call waits on, and those keys' channels.
FetchGroup = tuple[tuple[int, tuple[str, ...]], dict[str, str]]


@dataclass(frozen=True)
class GroupSend:
    """One group message, as every shard sends it to its members of the group."""

    group: str
    payload: bytes
    now: float
    expires_at: float
    #: Members whose last group_add is older than this are dropped, not sent to.
    cutoff: float
    #: Members under these prefixes are left to the caller (its local handlers).
    local_prefixes: Collection[str]
    #: The capacity of a member stored without one (the Lua script's default is 100).
    capacity_of: Callable[[str], int]


class Shard:
    """A plain Redis or a Sentinel-managed master: a client for quick commands, a client
    for blocking ones, and a bound on concurrent fetchers."""

    def __init__(
        self,
        label: str,
        identity: str,
        client: Any,
        blocking: Any,
        max_fetchers: int,
        prefix: str,
        key_ttl: int,
    ):
        self.label = label
        #: What rendezvous hashing ranks: the same Redis must get the same identity in
        #: every process, however its URL was spelled.
        self.identity = identity.encode() + b"\0"
        self.client = client
        self.blocking = blocking
        self.fetch_slots = BoundedSemaphore(max_fetchers)
        self.script = client.register_script(SCRIPT)
        self.prefix = prefix
        #: Seconds a key lives after its last write (the message expiry, rounded up).
        self.key_ttl = key_ttl
        self.down = False
        self.multi_pop = True
        #: Fast paths for sends, group sends and pops; None on Sentinel and Cluster shards.
        self.quick: Connections | None = None
        self.slow: Connections | None = None
        self.tally = Tally()
        self._flusher: gevent.Greenlet | None = None
        #: Held from taking the counts until they are written.
        self._flushing = BoundedSemaphore()

    # -- keys ----------------------------------------------------------------

    def list_key(self, list_name: str) -> str:
        return self.prefix + list_name

    def stats_key(self, list_name: str) -> str:
        return self.prefix + "stats:" + list_name

    def group_key(self, group: str) -> str:
        return self.prefix + "group:" + group

    def capacities_key(self, group: str) -> str:
        return self.prefix + "groupcap:" + group

    # -- sending ---------------------------------------------------------------

    def run_script(self, keys: Sequence[str], args: Sequence) -> Any:
        """Run redis_layer.lua (loading it first if Redis does not have it yet)."""
        if self.quick is None:
            return self.script(keys=keys, args=args)
        try:
            return self.quick.execute("EVALSHA", self.script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.quick.execute("SCRIPT", "LOAD", SCRIPT)
            return self.quick.execute("EVALSHA", self.script.sha, len(keys), *keys, *args)

    def store(self, list_name: str, item: bytes, capacity: int, now: float) -> bool:
        """Push one entry on ``list_name`` unless it holds ``capacity`` entries; False
        when it is full. Counts it, or counts it as refused, either way."""
        pushed = self.run_script(
            [self.list_key(list_name)], ["send", item, capacity, self.key_ttl, now]
        )
        self.count(list_name, 1 if pushed else 0, 0 if pushed else 1, now)
        return bool(pushed)

    # -- statistics, counted here and added to Redis in batches --------------------

    def count(self, list_name: str, sent: int, full: int, now: float) -> None:
        """Count messages sent to ``list_name`` (or refused as full); Redis gets the
        count within FLUSH_SECONDS."""
        self.tally.add(list_name, sent, full, now)
        if self._flusher is None:
            self._flusher = gevent.spawn_later(FLUSH_SECONDS, self._flush_later)

    def _flush_later(self) -> None:
        self._flusher = None
        try:
            self.flush_statistics()
        except UNREACHABLE as error:
            self.mark_down(error)  # kept for the next flush
        except Exception:
            log.exception("adding statistics to %s failed; they are dropped", self.label)

    def flush_statistics(self) -> None:
        """Add what this process counted to the statistics hashes in Redis. On failure
        the counts stay for the next flush. A flush already writing is waited for, so a
        reader that flushes first sees every count taken before it."""
        with self._flushing:
            counts = self.tally.take()
            try:
                self._write_counts(counts)
            except UNREACHABLE:
                self.tally.put_back(counts)
                raise

    def _write_counts(self, counts: Counts) -> None:
        """One script call per second counted: every list's hash, then the layer's."""
        for second, lists in counts.items():
            keys = [self.stats_key(name) for name in lists] + [self.prefix + "stats:"]
            args: list[Any] = ["stats", self.key_ttl, second, len(lists)]
            for sent, full in lists.values():
                args += [sent, full]
            args += [sum(c[0] for c in lists.values()), sum(c[1] for c in lists.values())]
            self.run_script(keys, args)

    def send_group(self, send: GroupSend) -> Skipped:
        """Send to the group's members on this shard that have room, all in one script
        call; returns the members left to the caller (see GroupSend)."""
        skipped = self.run_script(
            [self.group_key(send.group), self.capacities_key(send.group), self.prefix + "stats:"],
            [
                "group",
                stored.entry(send.payload, send.expires_at),
                send.payload,
                send.expires_at,
                self.key_ttl,
                send.now,
                int(send.now),
                send.cutoff,
                self.prefix,
                *send.local_prefixes,
            ],
        )
        return [
            (skipped[i].decode(), skipped[i + 1].decode().split(","))
            for i in range(0, len(skipped), 2)
        ]

    # -- receiving -------------------------------------------------------------

    def fetch_groups(self, keys: dict[str, str]) -> Iterator[FetchGroup]:
        """Keys one blocking call may wait on together (here: all of them), each set
        with an identity that names it among the shard's fetchers."""
        yield (id(self), tuple(sorted(keys))), keys

    def pop_now(self, keys: Sequence[str], count: int = 1) -> tuple[str, list[bytes]] | None:
        """Pop up to ``count`` entries from the head of the first non-empty list:
        (key, [items]) or None."""
        if self.multi_pop:
            try:
                if self.quick is not None:
                    return self.quick.execute("LMPOP", len(keys), *keys, "LEFT", "COUNT", count)
                return self.client.lmpop(len(keys), *keys, direction="LEFT", count=count)
            except redis.exceptions.ResponseError as error:
                self._no_multi_pop(error)
        for key in keys:
            item = self.client.lpop(key)
            if item is not None:
                return key, [item]
        return None

    def pop_blocking(self, keys: Sequence[str], timeout: float, count: int) -> Any:
        """Wait up to ``timeout`` for a message on ``keys``; pop up to ``count`` of the
        first non-empty list: (key, [items]) or None."""
        if self.multi_pop:
            try:
                if self.slow is not None:
                    return self.slow.execute(
                        "BLMPOP", timeout, len(keys), *keys, "LEFT", "COUNT", count
                    )
                return self.blocking.blmpop(
                    timeout, len(keys), *keys, direction="LEFT", count=count
                )
            except redis.exceptions.ResponseError as error:
                self._no_multi_pop(error)
        popped = self.blocking.blpop(keys, timeout=timeout)
        return (popped[0], [popped[1]]) if popped else None

    def pop_waiting(
        self, keys: Sequence[str], timeout: float, count: int, backoff: Backoff, doing: str
    ) -> Any:
        """pop_blocking for greenlets that must never die: a failure is logged (an outage
        once), waits out the back-off and returns None."""
        try:
            popped = self.pop_blocking(keys, timeout, count)
        except UNREACHABLE as error:
            self.mark_down(error)
            backoff.wait()
            return None
        except Exception:
            log.exception("%s from %s failed; retrying", doing, self.label)
            backoff.wait()
            return None
        backoff.reset()
        self.mark_up()
        return popped

    def push_back(self, key: str, items: list[bytes]) -> None:
        """Put popped entries back at the head of their list, in order."""
        try:
            self.client.lpush(key, *reversed(items))
        except UNREACHABLE as error:
            log.warning("lost %d message(s) on %s: %s", len(items), key, error)

    def _no_multi_pop(self, error: redis.exceptions.ResponseError) -> None:
        if "unknown command" not in str(error).lower():
            raise error
        self.multi_pop = False
        log.warning(
            "Redis at %s has no LMPOP/BLMPOP (Redis < 7.0): receiving one message "
            "per round trip; upgrade Redis for batched receives",
            self.label,
        )

    # -- flush and statistics ------------------------------------------------------

    def unlink(self, keys: list) -> None:
        self.client.unlink(*keys)

    def peek(self, key: str, now: float) -> tuple[int, bytes | None]:
        """(entries, head entry or None) of a list, after dropping expired entries at its
        head."""
        return self.script(keys=[key], args=["peek", now])

    def peek_all(self, keys: list, now: Callable[[], float]) -> list[tuple[int, bytes | None]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            self.script(keys=[key], args=["peek", now()], client=pipe)
        return pipe.execute() if keys else []

    # -- health ----------------------------------------------------------------

    def unavailable(self, error: BaseException) -> ChannelLayerUnavailable:
        self.mark_down(error)
        return ChannelLayerUnavailable(
            f"channel layer Redis at {self.label} is unreachable ({error}): check that "
            "redis-server is running and reachable from this host, and the CHANNEL_LAYERS "
            "hosts setting"
        )

    def mark_down(self, error: BaseException) -> None:
        if not self.down:
            self.down = True
            log.warning(
                "Redis at %s is unreachable (%s); retrying with back-off", self.label, error
            )

    def mark_up(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis at %s is reachable again", self.label)

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.kill()
            self._flusher = None
        try:
            self.flush_statistics()
        except Exception:  # best effort: the process is stopping
            log.debug("last statistics for %s not written", self.label, exc_info=True)
        for connections in (self.quick, self.slow):
            if connections is not None:
                connections.close()
        for client in (self.client, self.blocking):
            try:
                client.close()
            except Exception:  # closing is best effort
                log.debug("closing the Redis client of %s failed", self.label, exc_info=True)


class ClusterShard(Shard):
    """A whole Redis Cluster. A channel's keys carry a hash tag (``P{<channel>}``) so its
    list and counters share a slot and a send stays one atomic script; what would span
    slots (global counters, group sends, multi-key commands) is done one slot or one node
    at a time instead."""

    def list_key(self, list_name: str) -> str:
        return self.prefix + "{" + list_name + "}"

    def stats_key(self, list_name: str) -> str:
        return self.prefix + "stats:{" + list_name + "}"

    def _write_counts(self, counts: Counts) -> None:
        """One script call per hash: a script cannot span slots."""
        for second, lists in counts.items():
            sent_total = full_total = 0
            for name, (sent, full) in lists.items():
                self.run_script(
                    [self.stats_key(name)], ["stats", self.key_ttl, second, 1, sent, full]
                )
                sent_total, full_total = sent_total + sent, full_total + full
            self.run_script(
                [self.prefix + "stats:"], ["stats", self.key_ttl, second, 0, sent_total, full_total]
            )

    def send_group(self, send: GroupSend) -> Skipped:
        """The members' keys live in other slots than the group, so the members are read
        first, then sent to with one pipeline per cluster node (not atomic)."""
        client = self.client
        payload, now, expires_at = send.payload, send.now, send.expires_at
        group_key, capacities_key = self.group_key(send.group), self.capacities_key(send.group)
        client.zremrangebyscore(group_key, "-inf", f"({send.cutoff!r}")
        members = [m.decode() for m in client.zrange(group_key, 0, -1)]
        if not members:
            return []
        by_list: dict[str, list[str]] = {}
        for member in members:
            by_list.setdefault(non_local_name(member), []).append(member)
        firsts = [channels[0] for channels in by_list.values()]
        capacities = dict(zip(firsts, client.hmget(capacities_key, firsts), strict=True))
        skipped: Skipped = []
        #: node name -> (node, [(keys, args, list name, members)])
        by_node: dict[str, tuple[Any, list[tuple[list[str], list, str, list[str]]]]] = {}
        for list_name, channels in by_list.items():
            if list_name in send.local_prefixes:
                skipped.append((list_name, [c[len(list_name) :] for c in channels]))
                continue
            if len(channels) > 1:
                item = stored.fanout_entry(list_name, channels, payload, expires_at)
            else:
                item = stored.entry(payload, expires_at, channels[0])
            keys = [self.list_key(list_name)]
            capacity = int(capacities[channels[0]] or send.capacity_of(list_name))
            args = ["send", item, capacity, self.key_ttl, now]
            node = client.get_node_from_key(keys[0])
            by_node.setdefault(node.name, (node, []))[1].append((keys, args, list_name, channels))
        for node, calls in by_node.values():
            pipe = node.redis_connection.pipeline(transaction=False)
            for keys, args, _list_name, _channels in calls:
                self.script(keys=keys, args=args, client=pipe)
            try:
                replies = pipe.execute()
            except redis.exceptions.ResponseError:
                # Slots moved under us (resharding): one call at a time through the cluster.
                replies = [self.script(keys=call[0], args=call[1]) for call in calls]
            for (_keys, _args, list_name, channels), sent in zip(calls, replies, strict=True):
                n = len(channels)
                self.count(list_name, n if sent else 0, 0 if sent else n, now)
        return skipped

    def fetch_groups(self, keys: dict[str, str]) -> Iterator[FetchGroup]:
        """One set of keys per hash slot: a blocking pop cannot span slots."""
        slots: dict[int, dict[str, str]] = {}
        for key, name in keys.items():
            slots.setdefault(self.client.keyslot(key), {})[key] = name
        for subset in slots.values():
            yield (id(self), tuple(sorted(subset))), subset

    def unlink(self, keys: list) -> None:
        pipe = self.client.pipeline()
        for key in keys:
            pipe.unlink(key)
        pipe.execute()

    def peek_all(self, keys: list, now: Callable[[], float]) -> list[tuple[int, bytes | None]]:
        # Scripts cannot be pipelined through a cluster client.
        return [self.script(keys=[key], args=["peek", now()]) for key in keys]
