"""The Redis channel layer: several processes or machines share channels and groups.

Everything that must be atomic happens inside Redis (redis_layer.lua beside this file):
a send checks capacity, pushes and sets the key's expiry in one script call; a group send
reads the members and pushes to each member with room in one call per shard. Members that
share a process-local list (the sockets of one server process) get ONE fan-out entry there
with their names and the message once, so a burst of group messages cannot overflow it.
Hot commands go straight over connections of our own (see _Connections).

Receiving blocks inside Redis (BLMPOP). Greenlets that wait on the same channels share one
fetcher greenlet and one connection; it pops only as many messages as there are waiting
greenlets, so nothing leaves Redis without a receiver (at-most-once, little loss on a crash).
A process-local prefix attached with ``attach_local`` gets a drain greenlet that pops its
list in batches and calls the handler, once per member of a fan-out entry with one shared
decoded message.

Layout in Redis (``P`` is ``prefix``): ``P<channel>`` list of messages, ``P stats:<channel>``
and ``P stats:`` counters, ``P group:<group>`` sorted set of members scored by join time
and ``P groupcap:<group>`` each member's capacity. With several hosts a channel lives on the
host chosen by rendezvous hashing of its name (``a!x`` by ``a!``); a group's members are
kept on the host of each member channel, so a group send is one script call per host.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import struct
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import gevent
import msgpack
import redis
from gevent.event import AsyncResult
from gevent.lock import BoundedSemaphore
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..exceptions import ChannelFull, ChannelLayerUnavailable, MessageTooLarge
from .base import (
    BaseChannelLayer,
    LocalHandler,
    check_message,
    copy_message,
    non_local_name,
)

log = logging.getLogger("geventchannels.layers.redis")

#: Longest single blocking call; an idle fetcher or drain looks at its state this often.
BLOCK_SECONDS = 5.0
#: Most messages a local drain pops in one call.
DRAIN_BATCH = 100
#: Back-off between reconnection attempts while Redis is unreachable.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0

_HEADER = struct.Struct(">dH")
#: A name length no channel name has: marks a fan-out entry, whose names follow with their
#: total length (see redis_layer.lua).
_FANOUT = 0xFFFF
_FANOUT_MARK = struct.pack(">H", _FANOUT)
_NAMES_LENGTH = struct.Struct(">I")
_SCRIPT = (Path(__file__).with_name("redis_layer.lua")).read_text()
_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _fernet_key(key: str | bytes) -> bytes:
    """Any string becomes a valid Fernet key: SHA-256, then URL-safe base64."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    return base64.urlsafe_b64encode(hashlib.sha256(key).digest())


def _make_crypter(keys: Sequence[str | bytes]):
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError:
        raise ImportError(
            "symmetric_encryption_keys needs the cryptography package: "
            "pip install 'geventchannels[crypto]'"
        ) from None
    if isinstance(keys, str | bytes):
        raise TypeError("symmetric_encryption_keys must be a list of keys, not one string")
    if not keys:
        raise ValueError("symmetric_encryption_keys is empty: give at least one key")
    return MultiFernet([Fernet(_fernet_key(key)) for key in keys])


class _Backoff:
    """Exponential back-off between reconnection attempts, capped."""

    def __init__(self) -> None:
        self.delay = BACKOFF_FIRST

    def wait(self) -> None:
        gevent.sleep(self.delay)
        self.delay = min(self.delay * 2, BACKOFF_MAX)

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST


class _Connections:
    """Commands sent straight on redis-py connections of our own, skipping the client's
    per-call pool checkout, health check and instrumentation: a third of the CPU per
    command under gevent. For the hot path of a plain (non-Sentinel, non-Cluster) Redis."""

    def __init__(self, pool, limit: int | None):
        self._new = lambda: pool.connection_class(**pool.connection_kwargs)
        self._idle: list = []
        self._slots = BoundedSemaphore(limit) if limit else None

    def execute(self, *args):
        if self._slots is None:
            return self._execute(args)
        with self._slots:
            return self._execute(args)

    def _execute(self, args):
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else self._new()
        try:
            try:
                connection.send_command(*args, check_health=False)
                reply = connection.read_response()
            except redis.exceptions.ConnectionError:
                if not reused:
                    raise
                # An idle connection Redis dropped (a restart): one retry on a new one.
                connection.disconnect()
                connection.send_command(*args, check_health=False)
                reply = connection.read_response()
        except redis.exceptions.ResponseError:
            self._idle.append(connection)
            raise
        except BaseException:
            connection.disconnect()  # in an unknown state: never reuse it
            raise
        self._idle.append(connection)
        return reply

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()


class _Shard:
    """One Redis (a server, a Sentinel-managed master or a whole Cluster): a client for
    quick commands, a client for blocking ones, and a bound on concurrent fetchers."""

    def __init__(
        self, label: str, identity: str, client, blocking, max_fetchers: int, cluster: bool
    ):
        self.label = label
        #: What rendezvous hashing ranks: the same Redis must get the same identity in
        #: every process, however its URL was spelled.
        self.identity = identity.encode() + b"\0"
        self.client = client
        self.blocking = blocking
        self.cluster = cluster
        self.fetch_slots = BoundedSemaphore(max_fetchers)
        self.script = client.register_script(_SCRIPT)
        self.down = False
        self.multi_pop = True
        #: Fast paths for sends, group sends and pops; None on Sentinel and Cluster shards.
        self.quick: _Connections | None = None
        self.slow: _Connections | None = None

    def run_script(self, keys: Sequence[str], args: Sequence) -> Any:
        """Run redis_layer.lua (loading it first if Redis does not have it yet)."""
        if self.quick is None:
            return self.script(keys=keys, args=args)
        try:
            return self.quick.execute("EVALSHA", self.script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.quick.execute("SCRIPT", "LOAD", _SCRIPT)
            return self.quick.execute("EVALSHA", self.script.sha, len(keys), *keys, *args)

    def pop_now(self, keys: Sequence[str]) -> tuple[str, list[bytes]] | None:
        """Pop the head of the first non-empty list: (key, [item]) or None."""
        if self.multi_pop:
            try:
                if self.quick is not None:
                    return self.quick.execute("LMPOP", len(keys), *keys, "LEFT")
                return self.client.lmpop(len(keys), *keys, direction="LEFT")
            except redis.exceptions.ResponseError as error:
                self._no_multi_pop(error)
        for key in keys:
            item = self.client.lpop(key)
            if item is not None:
                return key, [item]
        return None

    def pop_blocking(self, keys: Sequence[str], timeout: float, count: int):
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
        self, keys: Sequence[str], timeout: float, count: int, backoff: _Backoff, doing: str
    ):
        """pop_blocking for greenlets that must never die: a failure is logged (an outage
        once), waits out the back-off and returns None."""
        try:
            popped = self.pop_blocking(keys, timeout, count)
        except _UNREACHABLE as error:
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

    def _no_multi_pop(self, error: redis.exceptions.ResponseError) -> None:
        if "unknown command" not in str(error).lower():
            raise error
        self.multi_pop = False
        log.warning(
            "Redis at %s has no LMPOP/BLMPOP (Redis < 7.0): receiving one message "
            "per round trip; upgrade Redis for batched receives",
            self.label,
        )

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
        for connections in (self.quick, self.slow):
            if connections is not None:
                connections.close()
        for client in (self.client, self.blocking):
            try:
                client.close()
            except Exception:  # closing is best effort
                log.debug("closing the Redis client of %s failed", self.label, exc_info=True)


class _Waiter:
    """One greenlet blocked in receive(): the fetchers of its channels hand it a message."""

    __slots__ = ("result", "deadline")

    def __init__(self, deadline: float | None):
        self.result = AsyncResult()
        self.deadline = deadline

    @property
    def waiting(self) -> bool:
        return not self.result.ready()


class _Fetcher:
    """The one greenlet that blocks in Redis for every receiver of one set of keys on one
    shard, popping at most as many messages as receivers wait."""

    def __init__(self, layer: RedisChannelLayer, shard: _Shard, keys: dict[str, str], ident):
        self.layer = layer
        self.shard = shard
        self.keys = list(keys)
        self.list_names = keys
        self.ident = ident
        self.waiters: deque[_Waiter] = deque()
        self.greenlet: gevent.Greenlet | None = None

    def add(self, waiter: _Waiter) -> None:
        self.waiters.append(waiter)
        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._run)

    def remove(self, waiter: _Waiter) -> None:
        try:
            self.waiters.remove(waiter)
        except ValueError:
            pass

    def _live(self) -> int:
        while self.waiters and not self.waiters[0].waiting:
            self.waiters.popleft()
        return sum(1 for waiter in self.waiters if waiter.waiting)

    def _live_soon(self) -> int:
        """Live waiters, giving a receiver that just got its message one turn to come
        back for the next (the consumer pool receives from a single greenlet in a loop)."""
        count = self._live()
        if not count:
            gevent.sleep(0)
            count = self._live()
        return count

    def _run(self) -> None:
        backoff = _Backoff()
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
            idle = not any(waiter.waiting for waiter in self.waiters)
            if idle and self.layer._fetchers.get(self.ident) is self:
                del self.layer._fetchers[self.ident]

    def _block_time(self) -> float:
        deadlines = [w.deadline for w in self.waiters if w.waiting]
        if None in deadlines:
            return BLOCK_SECONDS
        return min(BLOCK_SECONDS, max(0.01, max(deadlines) - time.monotonic()))

    def _hand_over(self, key: bytes | str, items: list[bytes]) -> None:
        key = key.decode() if isinstance(key, bytes) else key
        list_name = self.list_names[key]
        unclaimed = []
        for item in self.layer._split_entries(list_name, items):
            received = self.layer._decode_item(list_name, item)
            if received is None:
                continue
            while self.waiters and not self.waiters[0].waiting:
                self.waiters.popleft()
            if self.waiters:
                self.waiters.popleft().result.set((*received, key, item))
            else:
                unclaimed.append(item)
        if unclaimed:
            # Every receiver left while we were blocked: put the messages back at the head.
            self.layer._push_back(self.shard, key, unclaimed)


class RedisChannelLayer(BaseChannelLayer):
    """ASGI 1.0 channel layer on Redis, for several processes or machines.

    Besides the keywords of BaseChannelLayer:

    - ``hosts``: list of ``redis://`` / ``rediss://`` / ``unix://`` URLs, ``(host, port)``
      pairs, or ``redis+sentinel://h1:26379,h2:26379/service/db`` URLs; one shard each.
    - ``prefix``: prepended to every key; ``flush()`` deletes only keys under it.
    - ``symmetric_encryption_keys``: list of secrets; messages are encrypted with the first
      and decrypted with any (Fernet), so keys can be rotated.
    - ``connection_kwargs``: passed to redis-py's clients (password, ssl, timeouts...).
    - ``sentinels`` + ``service_name`` (a name or list of names, one shard each) and
      ``sentinel_kwargs``: Redis Sentinel without URLs.
    - ``cluster=True``: ``hosts`` are start-up nodes of one Redis Cluster.
    - ``max_connections``: per shard, for quick commands (greenlets wait for a free one).
    - ``max_fetchers``: per shard, blocking connections used by receivers.
    """

    def __init__(
        self,
        hosts: Sequence[str | tuple[str, int]] | None = None,
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
        self._crypter = (
            _make_crypter(symmetric_encryption_keys) if symmetric_encryption_keys else None
        )
        self._connection_kwargs = dict(connection_kwargs or {})
        self._connection_kwargs.setdefault("retry", Retry(ExponentialBackoff(0.25, 0.025), 2))
        self._max_connections = max_connections
        self._max_fetchers = max_fetchers
        self._key_ttl = max(1, int(self.expiry) + 1)
        self.shards = self._build_shards(hosts, sentinels, service_name, sentinel_kwargs or {})
        self._shard_cache: dict[str, _Shard] = {}
        self._fetchers: dict[Any, _Fetcher] = {}
        self._drains: dict[str, gevent.Greenlet] = {}
        self._turn = 0
        self._packer = msgpack.Packer(use_bin_type=True)

    # -- connections -------------------------------------------------------

    def _build_shards(self, hosts, sentinels, service_name, sentinel_kwargs) -> list[_Shard]:
        if sentinels or service_name:
            if not (sentinels and service_name):
                raise ValueError(
                    "Redis Sentinel needs both sentinels=[(host, port), ...] and service_name"
                )
            names = [service_name] if isinstance(service_name, str) else list(service_name)
            return [
                self._sentinel_shard(list(sentinels), name, 0, sentinel_kwargs) for name in names
            ]
        if hosts is None:
            hosts = ["redis://127.0.0.1:6379/0"]
        if isinstance(hosts, str):
            hosts = [hosts]
        if not hosts:
            raise ValueError("hosts is empty: give at least one redis:// URL or (host, port)")
        if self.cluster:
            return [self._cluster_shard(hosts)]
        return [self._host_shard(host, sentinel_kwargs) for host in hosts]

    def _host_shard(self, host, sentinel_kwargs) -> _Shard:
        kwargs = self._connection_kwargs
        if isinstance(host, str) and host.startswith("redis+sentinel://"):
            sentinels, service, db = _parse_sentinel_url(host)
            return self._sentinel_shard(sentinels, service, db, sentinel_kwargs)
        if isinstance(host, str):
            quick = redis.BlockingConnectionPool.from_url(
                host, max_connections=self._max_connections, timeout=20, **kwargs
            )
            slow = redis.ConnectionPool.from_url(host, **self._blocking_kwargs())
            label = _safe_label(host)
        elif isinstance(host, Sequence) and len(host) == 2:
            address = {"host": host[0], "port": int(host[1])}
            quick = redis.BlockingConnectionPool(
                max_connections=self._max_connections, timeout=20, **address, **kwargs
            )
            slow = redis.ConnectionPool(**address, **self._blocking_kwargs())
            label = f"{host[0]}:{host[1]}"
        else:
            raise TypeError(f"a Redis host is a redis:// URL or a (host, port) pair, got {host!r}")
        where = quick.connection_kwargs
        identity = "{}:{}/{}".format(
            where.get("path") or where.get("host"), where.get("port", ""), where.get("db", 0)
        )
        shard = _Shard(
            label,
            identity,
            redis.Redis(connection_pool=quick),
            redis.Redis(connection_pool=slow),
            self._max_fetchers,
            cluster=False,
        )
        shard.quick = _Connections(quick, self._max_connections)
        shard.slow = _Connections(slow, None)  # bounded by the shard's fetch_slots
        return shard

    def _blocking_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._connection_kwargs)
        kwargs["socket_timeout"] = BLOCK_SECONDS + 10
        return kwargs

    def _sentinel_shard(self, sentinels, service: str, db: int, sentinel_kwargs) -> _Shard:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, **self._connection_kwargs)
        # Sentinel's pool fails past max_connections instead of waiting, so it is left unbounded.
        quick = sentinel.master_for(service, db=db)
        slow = sentinel.master_for(service, db=db, socket_timeout=BLOCK_SECONDS + 10)
        via = ", ".join(f"{host}:{port}" for host, port in sentinels)
        label = f"sentinel service {service!r} via {via}"
        return _Shard(
            label, f"sentinel:{service}/{db}", quick, slow, self._max_fetchers, cluster=False
        )

    def _cluster_shard(self, hosts) -> _Shard:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = []
        for host in hosts:
            if isinstance(host, str):
                parts = urlsplit(host)
                nodes.append(ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379))
            else:
                nodes.append(ClusterNode(host[0], int(host[1])))
        kwargs = {k: v for k, v in self._connection_kwargs.items() if k != "retry"}
        quick = RedisCluster(startup_nodes=nodes, **kwargs)
        slow = RedisCluster(startup_nodes=nodes, **{**kwargs, "socket_timeout": BLOCK_SECONDS + 10})
        label = "cluster via " + ", ".join(f"{n.host}:{n.port}" for n in nodes)
        return _Shard(label, "cluster", quick, slow, self._max_fetchers, cluster=True)

    def _shard_for(self, list_name: str) -> _Shard:
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

    # -- keys and encoding -------------------------------------------------

    def _list_key(self, list_name: str) -> str:
        return self.prefix + (f"{{{list_name}}}" if self.cluster else list_name)

    def _stats_key(self, list_name: str) -> str:
        return self.prefix + "stats:" + (f"{{{list_name}}}" if self.cluster else list_name)

    def _group_key(self, group: str) -> str:
        return self.prefix + "group:" + group

    def _capacities_key(self, group: str) -> str:
        return self.prefix + "groupcap:" + group

    def _pack(self, message: dict) -> tuple[dict, bytes]:
        """(a private copy of ``message``, its msgpack encoding)."""
        # copy_message checks value and key types the way every layer does; msgpack alone
        # would accept int keys and sets that the receiving side then rejects.
        copied = copy_message(message, self.max_message_size)
        return copied, self._encode(copied)

    def _encode(self, message: dict) -> bytes:
        packed = self._packer.pack(message)
        if len(packed) > self.max_message_size:
            raise MessageTooLarge(
                f"message is {len(packed)} bytes, larger than the layer's limit of "
                f"{self.max_message_size} bytes; send large data out of band or raise "
                "max_message_size"
            )
        return packed

    def _seal(self, packed: bytes) -> bytes:
        return self._crypter.encrypt(packed) if self._crypter else packed

    @staticmethod
    def _item(channel: str, payload: bytes, expires_at: float) -> bytes:
        name = channel.encode() if "!" in channel else b""
        return _HEADER.pack(expires_at, len(name)) + name + payload

    @staticmethod
    def _open_entry(list_name: str, item: bytes) -> tuple[float, list[str], bytes]:
        """(expires_at, channels, sealed payload) of a stored entry: one channel for a
        message, several for a fan-out entry."""
        expires_at, name_length = _HEADER.unpack_from(item)
        start = _HEADER.size
        if name_length == _FANOUT:
            (names_length,) = _NAMES_LENGTH.unpack_from(item, start)
            start += _NAMES_LENGTH.size
            names = item[start : start + names_length].decode().split(",")
            return expires_at, [list_name + name for name in names], item[start + names_length :]
        if name_length:
            channel = item[start : start + name_length].decode()
            return expires_at, [channel], item[start + name_length :]
        return expires_at, [list_name], item[start:]

    def _decode_entry(self, list_name: str, item: bytes) -> tuple[list[str], dict] | None:
        """(channels, message) of a stored entry, or None when it expired or is unreadable."""
        try:
            expires_at, channels, payload = self._open_entry(list_name, item)
            if expires_at < time.time():
                return None
            if self._crypter:
                payload = self._crypter.decrypt(payload)
            return channels, msgpack.unpackb(payload, raw=False)
        except Exception as error:  # one bad message must not stop receiving
            log.error(
                "dropped an unreadable message on %s: %r (do all processes share the "
                "same symmetric_encryption_keys and geventchannels version?)",
                list_name,
                error,
            )
            return None

    @staticmethod
    def _fanout_item(
        list_name: str, channels: list[str], payload: bytes, expires_at: float
    ) -> bytes:
        """One stored entry for several members of the list ``list_name`` (as the group
        operation of redis_layer.lua builds it)."""
        names = ",".join(channel[len(list_name) :] for channel in channels).encode()
        return _HEADER.pack(expires_at, _FANOUT) + _NAMES_LENGTH.pack(len(names)) + names + payload

    def _decode_item(self, list_name: str, item: bytes) -> tuple[str, dict] | None:
        """(channel, message) of a one-channel entry (see _split_entries)."""
        decoded = self._decode_entry(list_name, item)
        return None if decoded is None else (decoded[0][0], decoded[1])

    def _split_entries(self, list_name: str, items: list[bytes]) -> list[bytes]:
        """``items`` with each fan-out entry replaced by one entry per member, for receivers
        that take one message each (receive() rather than a local handler)."""
        if not any(item[8:10] == _FANOUT_MARK for item in items):
            return items
        split = []
        for item in items:
            if item[8:10] != _FANOUT_MARK:
                split.append(item)
                continue
            try:
                expires_at, channels, payload = self._open_entry(list_name, item)
            except Exception:
                split.append(item)  # _decode_entry logs it
                continue
            split.extend(self._item(channel, payload, expires_at) for channel in channels)
        return split

    # -- sending -----------------------------------------------------------

    def _send(self, channel: str, message: dict) -> None:
        self._store(channel, self._pack(message)[1])

    def _send_owned(self, channel: str, message: dict, checked: bool) -> None:
        # Encoding is a copy already: the caller's dict needs no other.
        if not checked:
            check_message(message, self.max_message_size)
        self._store(channel, self._encode(message))

    def _store(self, channel: str, packed: bytes) -> None:
        payload = self._seal(packed)
        list_name = non_local_name(channel)
        shard = self._shard_for(list_name)
        now = time.time()
        item = self._item(channel, payload, now + self.expiry)
        keys = [self._list_key(list_name), self._stats_key(list_name)]
        if not shard.cluster:
            keys.append(self.prefix + "stats:")
        args = ["send", item, self.get_capacity(list_name), self._key_ttl, now, int(now)]
        try:
            pushed = shard.run_script(keys, args)
            if shard.cluster:
                self._cluster_global_bump(shard, "count" if pushed else "full")
        except _UNREACHABLE as error:
            raise shard.unavailable(error) from None
        if not pushed:
            raise ChannelFull(
                f"channel {channel!r} is full (capacity {self.get_capacity(list_name)}): "
                "run more consumers or raise capacity / channel_capacity"
            )

    def _cluster_global_bump(self, shard: _Shard, what: str) -> None:
        shard.client.hincrby(self.prefix + "stats:", what, 1)

    # -- receiving ---------------------------------------------------------

    def receive(
        self, channels: Iterable[str], block: bool = False, timeout: float | None = None
    ) -> tuple[str | None, dict | None]:
        by_shard = self._keys_by_shard(channels)
        if not by_shard:
            # Only prefixes whose drain feeds a local handler: nothing to receive here.
            if block and (timeout is None or timeout > 0):
                gevent.sleep(BLOCK_SECONDS if timeout is None else timeout)
            return None, None
        if not block or (timeout is not None and timeout <= 0):
            return self._receive_now(by_shard)
        waiter = _Waiter(None if timeout is None else time.monotonic() + timeout)
        fetchers = []
        for shard, keys in by_shard.items():
            for ident, subset in self._fetch_groups(shard, keys):
                fetcher = self._fetchers.get(ident)
                if fetcher is None:
                    fetcher = self._fetchers[ident] = _Fetcher(self, shard, subset, ident)
                fetcher.add(waiter)
                fetchers.append(fetcher)
        try:
            waiter.result.get(timeout=timeout)
        except gevent.Timeout:
            pass  # a message handed over as the timer fired is still returned below
        except BaseException:
            # Killed after a fetcher handed us a message: it goes back to the head of its list.
            if waiter.result.successful() and waiter.result.value[0] is not None:
                channel, _message, key, item = waiter.result.value
                self._push_back(self._shard_for(non_local_name(channel)), key, [item])
            raise
        finally:
            for fetcher in fetchers:
                fetcher.remove(waiter)
        if waiter.result.successful():
            channel, message, _key, _item = waiter.result.value
            return channel, message
        return None, None

    @staticmethod
    def _push_back(shard: _Shard, key: str, items: list[bytes]) -> None:
        try:
            shard.client.lpush(key, *reversed(items))
        except _UNREACHABLE as error:
            log.warning("lost %d message(s) on %s: %s", len(items), key, error)

    def _keys_by_shard(self, channels: Iterable[str]) -> dict[_Shard, dict[str, str]]:
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
        by_shard: dict[_Shard, dict[str, str]] = {}
        for channel in channels:
            self.valid_channel_name(channel, receive=True)
            if channel in self._drains:
                continue  # its drain greenlet hands these to the attached handler, in order
            by_shard.setdefault(self._shard_for(channel), {})[self._list_key(channel)] = channel
        return by_shard

    def _fetch_groups(self, shard: _Shard, keys: dict[str, str]):
        """Keys one blocking call may wait on together: all of a shard's, or in a cluster
        those of one hash slot."""
        if not shard.cluster:
            yield (id(shard), tuple(sorted(keys))), keys
            return
        slots: dict[int, dict[str, str]] = {}
        for key, name in keys.items():
            slots.setdefault(shard.client.keyslot(key), {})[key] = name
        for subset in slots.values():
            yield (id(shard), tuple(sorted(subset))), subset

    def _receive_now(self, by_shard) -> tuple[str | None, dict | None]:
        for shard, keys in by_shard.items():
            for _ident, subset in self._fetch_groups(shard, keys):
                while True:
                    try:
                        popped = shard.pop_now(list(subset))
                    except _UNREACHABLE as error:
                        raise shard.unavailable(error) from None
                    if not popped:
                        break
                    key, items = popped
                    key = key.decode() if isinstance(key, bytes) else key
                    items = self._split_entries(subset[key], items)
                    for index, item in enumerate(items):
                        received = self._decode_item(subset[key], item)
                        if received is not None:
                            if index + 1 < len(items):
                                self._push_back(shard, key, items[index + 1 :])
                            return received
        return None, None

    # -- process-local delivery ----------------------------------------------

    def attach_local(self, prefix: str, handler: LocalHandler) -> None:
        """Deliver ``prefix``'s messages to ``handler``: sends from this process directly,
        sends from other processes through a drain greenlet that pops the prefix's list."""
        super().attach_local(prefix, handler)
        old = self._drains.pop(prefix, None)
        if old is not None:
            old.kill()
        self._drains[prefix] = gevent.spawn(self._drain_local, prefix)

    def detach_local(self, prefix: str) -> None:
        super().detach_local(prefix)
        drain = self._drains.pop(prefix, None)
        if drain is not None:
            drain.kill()

    def _drain_local(self, prefix: str) -> None:
        shard = self._shard_for(prefix)
        key = self._list_key(prefix)
        backoff = _Backoff()
        while True:
            popped = shard.pop_waiting(
                [key], BLOCK_SECONDS, DRAIN_BATCH, backoff, "draining " + prefix
            )
            if not popped:
                continue
            for item in popped[1]:
                decoded = self._decode_entry(prefix, item)
                handler = self._local_handlers.get(prefix)
                if decoded is None or handler is None:
                    continue
                channels, message = decoded
                for channel in channels:  # a fan-out entry's members share one message
                    try:
                        handler(channel, message)
                    except Exception:
                        log.exception(
                            "local handler for %s failed on a message to %s", prefix, channel
                        )
                if len(channels) > 1:
                    gevent.sleep(0)  # let the sockets just handed a message write it

    # -- groups ------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        list_name = non_local_name(channel)
        shard = self._shard_for(list_name)
        ttl = max(1, int(self.group_expiry) + 1)
        pipe = shard.client.pipeline(transaction=False)
        pipe.zadd(self._group_key(group), {channel: time.time()})
        pipe.hset(self._capacities_key(group), channel, self.get_capacity(list_name))
        pipe.expire(self._group_key(group), ttl)
        pipe.expire(self._capacities_key(group), ttl)
        self._execute(shard, pipe)

    def group_discard(self, group: str, channel: str) -> None:
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        shard = self._shard_for(non_local_name(channel))
        pipe = shard.client.pipeline(transaction=False)
        pipe.zrem(self._group_key(group), channel)
        pipe.hdel(self._capacities_key(group), channel)
        self._execute(shard, pipe)

    def group_channels(self, group: str) -> list[str]:
        self.valid_group_name(group)
        cutoff = time.time() - self.group_expiry
        members: list[str] = []
        for shard in self.shards:
            try:
                found = shard.client.zrangebyscore(self._group_key(group), cutoff, "+inf")
            except _UNREACHABLE as error:
                raise shard.unavailable(error) from None
            members.extend(m.decode() for m in found)
        return members

    @staticmethod
    def _execute(shard: _Shard, pipe) -> list:
        try:
            return pipe.execute()
        except _UNREACHABLE as error:
            raise shard.unavailable(error) from None

    def send_group(self, group: str, message: dict) -> None:
        """Send to every member with room (full ones are skipped, never ChannelFull):
        one script call per shard, run concurrently; members whose prefix is attached in
        this process get the message directly."""
        self.valid_group_name(group)
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, got {type(message).__name__}")
        copied, packed = self._pack(message)
        payload = self._seal(packed)
        now = time.time()
        if len(self.shards) == 1:
            outcomes = [self._send_group_on(self.shards[0], group, payload, now)]
        else:
            jobs = [gevent.spawn(self._send_group_on, s, group, payload, now) for s in self.shards]
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

    def _send_group_on(
        self, shard: _Shard, group: str, payload: bytes, now: float
    ) -> list[tuple[str, list[str]]]:
        """Send to the group's members on ``shard``; returns the members left to this
        process's local handlers as (prefix, [parts after the prefix])."""
        expires_at = now + self.expiry
        cutoff = now - self.group_expiry
        try:
            if shard.cluster:
                return self._cluster_send_group(shard, group, payload, expires_at, now, cutoff)
            skipped = shard.run_script(
                [self._group_key(group), self._capacities_key(group), self.prefix + "stats:"],
                [
                    "group",
                    _HEADER.pack(expires_at, 0) + payload,
                    payload,
                    expires_at,
                    self._key_ttl,
                    now,
                    int(now),
                    cutoff,
                    self.prefix,
                    *self._local_handlers,
                ],
            )
        except _UNREACHABLE as error:
            raise shard.unavailable(error) from None
        return [
            (skipped[i].decode(), skipped[i + 1].decode().split(","))
            for i in range(0, len(skipped), 2)
        ]

    def _cluster_send_group(self, shard, group, payload, expires_at, now, cutoff) -> list:
        """In a cluster the members' keys live in other slots than the group, so the members
        are read first, then sent to with one pipeline per cluster node (not atomic)."""
        group_key, capacities_key = self._group_key(group), self._capacities_key(group)
        shard.client.zremrangebyscore(group_key, "-inf", f"({cutoff!r}")
        members = [m.decode() for m in shard.client.zrange(group_key, 0, -1)]
        if not members:
            return []
        by_list: dict[str, list[str]] = {}
        for member in members:
            by_list.setdefault(non_local_name(member), []).append(member)
        firsts = [channels[0] for channels in by_list.values()]
        capacities = dict(zip(firsts, shard.client.hmget(capacities_key, firsts), strict=True))
        skipped, by_node = [], {}
        for list_name, channels in by_list.items():
            if list_name in self._local_handlers:
                skipped.append((list_name, [c[len(list_name) :] for c in channels]))
                continue
            if len(channels) > 1:
                item = self._fanout_item(list_name, channels, payload, expires_at)
            else:
                item = self._item(channels[0], payload, expires_at)
            keys = [self._list_key(list_name), self._stats_key(list_name)]
            capacity = int(capacities[channels[0]] or self.get_capacity(list_name))
            args = ["send", item, capacity, self._key_ttl, now, int(now), len(channels)]
            node = shard.client.get_node_from_key(keys[0])
            by_node.setdefault(node.name, (node, []))[1].append((keys, args))
        pushed = 0
        for node, calls in by_node.values():
            pipe = node.redis_connection.pipeline(transaction=False)
            for keys, args in calls:
                shard.script(keys=keys, args=args, client=pipe)
            try:
                replies = pipe.execute()
            except redis.exceptions.ResponseError:
                # Slots moved under us (resharding): one call at a time through the cluster.
                replies = [shard.script(keys=keys, args=args) for keys, args in calls]
            pushed += sum(
                args[-1] for (_keys, args), sent in zip(calls, replies, strict=True) if sent
            )
        if pushed:
            shard.client.hincrby(self.prefix + "stats:", "count", pushed)
        return skipped

    # -- flush, statistics, close -------------------------------------------

    def flush(self) -> None:
        """Delete every key under this layer's prefix (never other keys in the database)."""
        for shard in self.shards:
            try:
                batch = []
                for key in shard.client.scan_iter(match=self._pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        self._unlink(shard, batch)
                        batch = []
                if batch:
                    self._unlink(shard, batch)
            except _UNREACHABLE as error:
                raise shard.unavailable(error) from None

    @staticmethod
    def _unlink(shard: _Shard, keys: list) -> None:
        if shard.cluster:
            pipe = shard.client.pipeline()
            for key in keys:
                pipe.unlink(key)
            pipe.execute()
        else:
            shard.client.unlink(*keys)

    def channel_statistics(self, channel: str) -> dict[str, float]:
        self.valid_channel_name(channel)
        list_name = non_local_name(channel)
        shard = self._shard_for(list_name)
        try:
            counters = shard.client.hgetall(self._stats_key(list_name))
            pending, head = shard.script(
                keys=[self._list_key(list_name)], args=["peek", time.time()]
            )
        except _UNREACHABLE as error:
            raise shard.unavailable(error) from None
        stats = _counters(counters)
        stats["messages_pending"] = pending
        stats["messages_max_age"] = self._age(head)
        return stats

    def global_statistics(self) -> dict[str, float]:
        """Counters kept in Redis, plus pending messages and the oldest one's age found
        by a SCAN of this prefix's lists: meant for monitoring, not for every request."""
        totals: dict[str, float] = {"messages_pending": 0, "messages_max_age": 0}
        counted: dict[str, float] = {}
        for shard in self.shards:
            try:
                for name, value in _counters(shard.client.hgetall(self.prefix + "stats:")).items():
                    counted[name] = counted.get(name, 0) + value
                # Only channels are lists: counters are hashes and groups sorted sets.
                keys = list(shard.client.scan_iter(match=self._pattern, count=1000, _type="list"))
                if shard.cluster:  # scripts cannot be pipelined through a cluster client
                    replies = [shard.script(keys=[key], args=["peek", time.time()]) for key in keys]
                else:
                    pipe = shard.client.pipeline(transaction=False)
                    for key in keys:
                        shard.script(keys=[key], args=["peek", time.time()], client=pipe)
                    replies = pipe.execute() if keys else []
            except _UNREACHABLE as error:
                raise shard.unavailable(error) from None
            for pending, head in replies:
                totals["messages_pending"] += pending
                totals["messages_max_age"] = max(totals["messages_max_age"], self._age(head))
        return {**_counters({}), **counted, **totals}

    def _age(self, head: bytes | None) -> float:
        if not head:
            return 0
        expires_at = _HEADER.unpack_from(head)[0]
        return max(0.0, time.time() - (expires_at - self.expiry))

    def close(self) -> None:
        """Stop the fetcher and drain greenlets, wake waiting receivers, disconnect."""
        greenlets = list(self._drains.values())
        self._drains.clear()
        for fetcher in list(self._fetchers.values()):
            for waiter in fetcher.waiters:
                if waiter.waiting:
                    waiter.result.set((None, None, None, None))
            if fetcher.greenlet is not None:
                greenlets.append(fetcher.greenlet)
        self._fetchers.clear()
        gevent.killall(greenlets, timeout=5)
        for shard in self.shards:
            shard.close()

    def __repr__(self) -> str:
        hosts = ", ".join(s.label for s in self.shards)
        return f"<RedisChannelLayer {hosts} prefix={self.prefix!r}>"


def _counters(raw: dict) -> dict[str, float]:
    """The contract's counters from a stats hash written by redis_layer.lua."""
    now_sec = int(time.time())
    fields = {k.decode(): int(v) for k, v in raw.items()}
    stats: dict[str, float] = {}
    for what, name in (("count", "messages_count"), ("full", "channel_full_count")):
        stats[name] = fields.get(what, 0)
        seen = fields.get(what + ":sec", 0)
        if seen == now_sec:
            stats[name + "_per_second"] = fields.get(what + ":last", 0)
        elif seen == now_sec - 1:
            stats[name + "_per_second"] = fields.get(what + ":this", 0)
        else:
            stats[name + "_per_second"] = 0
    return stats


def _parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int]:
    """``redis+sentinel://h1:26379,h2:26379/service/db`` -> sentinels, service, db."""
    rest = url[len("redis+sentinel://") :]
    netloc, _, path = rest.partition("/")
    netloc = netloc.rpartition("@")[2]
    parts = [p for p in path.split("/") if p]
    if not netloc or not parts:
        raise ValueError(
            "a Sentinel URL looks like redis+sentinel://host:26379,host2:26379/"
            f"service_name/0, got {url!r}"
        )
    sentinels = []
    for hostport in netloc.split(","):
        host, _, port = hostport.rpartition(":")
        sentinels.append((unquote(host or hostport), int(port) if host else 26379))
    db = int(parts[1]) if len(parts) > 1 else 0
    return sentinels, unquote(parts[0]), db


def _safe_label(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.rpartition("@")[2]
        return parts._replace(netloc="***@" + netloc).geturl()
    return url
