"""From the layer's configuration to its shards: ``redis://`` URLs and (host, port) pairs,
Sentinel by keywords or ``redis+sentinel://`` URLs, or one Redis Cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .connections import (
    BLOCKING_SOCKET_TIMEOUT,
    CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    Connections,
    Pipelined,
)
from .shards import ClusterShard, Shard

Host = str | tuple[str, int]

#: What redis-py's connections get unless ``connection_kwargs`` says otherwise.
SOCKET_DEFAULTS = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT}


class ShardFactory:
    """Builds shards that share the layer's connection settings and key space."""

    def __init__(
        self,
        connection_kwargs: dict[str, Any] | None,
        max_connections: int,
        max_fetchers: int,
        prefix: str,
        key_ttl: int,
    ):
        self.connection_kwargs = {**SOCKET_DEFAULTS, **(connection_kwargs or {})}
        # A refused connection is retried; a timeout is not: a silent Redis would hold the
        # caller three times as long, and a command that timed out may have run.
        self.connection_kwargs.setdefault(
            "retry", Retry(ExponentialBackoff(0.25, 0.025), 2, (redis.exceptions.ConnectionError,))
        )
        self.max_connections = max_connections
        self.max_fetchers = max_fetchers
        self.prefix = prefix
        self.key_ttl = key_ttl

    def build(
        self,
        hosts: Sequence[Host] | str | None,
        sentinels: Sequence[tuple[str, int]] | None,
        service_name: str | Sequence[str] | None,
        sentinel_kwargs: dict[str, Any],
        cluster: bool,
    ) -> list[Shard]:
        if sentinels or service_name:
            if not (sentinels and service_name):
                raise ValueError(
                    "Redis Sentinel needs both sentinels=[(host, port), ...] and service_name"
                )
            names = [service_name] if isinstance(service_name, str) else list(service_name)
            return [self.sentinel(list(sentinels), name, 0, sentinel_kwargs) for name in names]
        if hosts is None:
            hosts = ["redis://127.0.0.1:6379/0"]
        if isinstance(hosts, str):
            hosts = [hosts]
        if not hosts:
            raise ValueError("hosts is empty: give at least one redis:// URL or (host, port)")
        if cluster:
            return [self.cluster(hosts)]
        return [self.host(host, sentinel_kwargs) for host in hosts]

    def host(self, host: Host, sentinel_kwargs: dict[str, Any]) -> Shard:
        kwargs = self.connection_kwargs
        if isinstance(host, str) and host.startswith("redis+sentinel://"):
            sentinels, service, db = parse_sentinel_url(host)
            return self.sentinel(sentinels, service, db, sentinel_kwargs)
        quick: redis.ConnectionPool
        if isinstance(host, str):
            quick = redis.BlockingConnectionPool.from_url(
                host, max_connections=self.max_connections, timeout=20, **kwargs
            )
            slow = redis.ConnectionPool.from_url(host, **self._blocking_kwargs())
            label = safe_label(host)
        elif isinstance(host, Sequence) and len(host) == 2:
            address: dict[str, Any] = {"host": host[0], "port": int(host[1])}
            quick = redis.BlockingConnectionPool(
                max_connections=self.max_connections, timeout=20, **address, **kwargs
            )
            slow = redis.ConnectionPool(**address, **self._blocking_kwargs())
            label = f"{host[0]}:{host[1]}"
        else:
            raise TypeError(f"a Redis host is a redis:// URL or a (host, port) pair, got {host!r}")
        where = quick.connection_kwargs
        identity = "{}:{}/{}".format(
            where.get("path") or where.get("host"), where.get("port", ""), where.get("db", 0)
        )
        shard = Shard(
            label,
            identity,
            redis.Redis(connection_pool=quick),
            redis.Redis(connection_pool=slow),
            self.max_fetchers,
            self.prefix,
            self.key_ttl,
        )
        shard.quick = Pipelined(quick)
        shard.slow = Connections(slow, None)  # bounded by the shard's fetch_slots
        return shard

    def _blocking_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.connection_kwargs)
        kwargs["socket_timeout"] = BLOCKING_SOCKET_TIMEOUT
        return kwargs

    def sentinel(
        self,
        sentinels: list[tuple[str, int]],
        service: str,
        db: int,
        sentinel_kwargs: dict[str, Any],
    ) -> Shard:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(
            sentinels,
            sentinel_kwargs={**SOCKET_DEFAULTS, **sentinel_kwargs},
            **self.connection_kwargs,
        )
        # Sentinel's pool fails past max_connections instead of waiting, so it is left unbounded.
        quick = sentinel.master_for(service, db=db)
        slow = sentinel.master_for(service, db=db, socket_timeout=BLOCKING_SOCKET_TIMEOUT)
        via = ", ".join(f"{host}:{port}" for host, port in sentinels)
        label = f"sentinel service {service!r} via {via}"
        return Shard(
            label,
            f"sentinel:{service}/{db}",
            quick,
            slow,
            self.max_fetchers,
            self.prefix,
            self.key_ttl,
        )

    def cluster(self, hosts: Sequence[Host]) -> ClusterShard:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = []
        for host in hosts:
            if isinstance(host, str):
                parts = urlsplit(host)
                nodes.append(ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379))
            else:
                nodes.append(ClusterNode(host[0], int(host[1])))
        kwargs = {k: v for k, v in self.connection_kwargs.items() if k != "retry"}
        quick = RedisCluster(startup_nodes=nodes, **kwargs)
        slow = RedisCluster(
            startup_nodes=nodes, **{**kwargs, "socket_timeout": BLOCKING_SOCKET_TIMEOUT}
        )
        label = "cluster via " + ", ".join(f"{n.host}:{n.port}" for n in nodes)
        return ClusterShard(
            label, "cluster", quick, slow, self.max_fetchers, self.prefix, self.key_ttl
        )


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int]:
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


def safe_label(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.rpartition("@")[2]
        return parts._replace(netloc="***@" + netloc).geturl()
    return url
