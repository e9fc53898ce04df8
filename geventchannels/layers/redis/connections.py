"""Talking to Redis: connections of our own for the hot commands, and back-off while a
Redis is unreachable."""

from __future__ import annotations

from typing import Any

import gevent
import redis
from gevent.lock import BoundedSemaphore

#: Longest single blocking call; an idle fetcher or drain looks at its state this often.
BLOCK_SECONDS = 5.0
#: Back-off between reconnection attempts while Redis is unreachable.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
#: The errors that mean "this Redis cannot be reached right now".
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class Backoff:
    """Exponential back-off between reconnection attempts, capped."""

    def __init__(self) -> None:
        self.delay = BACKOFF_FIRST

    def wait(self) -> None:
        gevent.sleep(self.delay)
        self.delay = min(self.delay * 2, BACKOFF_MAX)

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST


class Connections:
    """Commands sent straight on redis-py connections of our own, skipping the client's
    per-call pool checkout, health check and instrumentation: a third of the CPU per
    command under gevent. For the hot path of a plain (non-Sentinel, non-Cluster) Redis."""

    def __init__(self, pool: redis.ConnectionPool, limit: int | None):
        self._new = lambda: pool.connection_class(**pool.connection_kwargs)
        self._idle: list[Any] = []
        self._slots = BoundedSemaphore(limit) if limit else None

    def execute(self, *args: Any) -> Any:
        if self._slots is None:
            return self._execute(args)
        with self._slots:
            return self._execute(args)

    def _execute(self, args: tuple) -> Any:
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
