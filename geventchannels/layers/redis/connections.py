"""Talking to Redis: connections of our own for the hot commands, and back-off while a
Redis is unreachable."""

from __future__ import annotations

from typing import Any

import gevent
import redis
from gevent.event import Event
from gevent.lock import BoundedSemaphore

#: Longest single blocking call; an idle fetcher or drain looks at its state this often.
BLOCK_SECONDS = 5.0
#: Defaults of redis-py's ``socket_timeout`` / ``socket_connect_timeout`` (unbounded in
#: redis-py): a Redis that drops packets fails a command within them instead of hanging
#: its caller, and within WEBSOCKET_HANDSHAKE_TIMEOUT (5 s), so a handshake gets its 503.
SOCKET_TIMEOUT, CONNECT_TIMEOUT = 3.0, 2.0
#: The socket timeout of blocking receives, which wait in Redis up to BLOCK_SECONDS.
BLOCKING_SOCKET_TIMEOUT = BLOCK_SECONDS + 10
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

    def _execute_many(self, commands: list[tuple]) -> list[Any]:
        """Every command in one write, then every reply (an error reply is returned as
        its ResponseError, in its place)."""
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else self._new()
        try:
            try:
                replies = _round_trip(connection, commands)
            except redis.exceptions.ConnectionError:
                if not reused:
                    raise
                connection.disconnect()
                replies = _round_trip(connection, commands)
        except BaseException:
            connection.disconnect()
            raise
        self._idle.append(connection)
        return replies

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()


def _round_trip(connection: Any, commands: list[tuple]) -> list[Any]:
    connection.send_packed_command(connection.pack_commands(commands), check_health=False)
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(connection.read_response())
        except redis.exceptions.ResponseError as error:
            replies.append(error)
    return replies


class _Queued:
    """A command waiting for the pipeline in flight to be answered."""

    __slots__ = ("args", "ready", "reply", "error", "batch")

    def __init__(self, args: tuple):
        self.args = args
        self.ready = Event()
        self.reply: Any = None
        self.error: BaseException | None = None
        #: Set on the first command of a batch: its caller sends the batch.
        self.batch: list[_Queued] | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.reply


class Pipelined(Connections):
    """Commands of greenlets that call at about the same time share round trips: while
    one command or pipeline is in flight, later commands queue, and once it is answered
    the caller of the first of them sends them all as the next pipeline (one write, one
    read of every reply). A lone command costs what it did; a busy process pays one
    round trip per batch instead of one per command, and Redis one read per batch.

    One command or pipeline is in flight at a time, on one connection: Redis runs
    commands one after the other anyway. For quick commands only (never blocking ones).
    A round trip that finds Redis unreachable fails the commands queued behind it with
    the same error, so that a silent Redis holds each caller one socket timeout, not one
    per batch ahead of it.
    """

    def __init__(self, pool: redis.ConnectionPool):
        super().__init__(pool, None)
        self._in_flight = False
        self._queue: list[_Queued] = []

    def execute(self, *args: Any) -> Any:
        if not self._in_flight:
            self._in_flight = True
            try:
                return self._execute(args)
            except UNREACHABLE as error:
                self._fail_queued(error)
                raise
            finally:
                self._hand_on()
        queued = _Queued(args)
        self._queue.append(queued)
        try:
            queued.ready.wait()
        except BaseException:
            if queued.batch is not None:  # told to send its batch, but killed first
                gevent.spawn(self._lead, queued.batch)
            raise
        if queued.batch is not None:
            self._lead(queued.batch)
        return queued.outcome()

    def _hand_on(self) -> None:
        """After a round trip: the first caller of the next batch sends it."""
        if not self._queue:
            self._in_flight = False
            return
        batch, self._queue = self._queue, []
        batch[0].batch = batch
        batch[0].ready.set()

    def _fail_queued(self, error: BaseException) -> None:
        queued, self._queue = self._queue, []
        for waiting in queued:
            waiting.error = error
            waiting.ready.set()

    def _lead(self, batch: list[_Queued]) -> None:
        try:
            replies = self._execute_many([queued.args for queued in batch])
        except Exception as error:  # each caller raises it
            for queued in batch:
                queued.error = error
            if isinstance(error, UNREACHABLE):
                self._fail_queued(error)
        except BaseException as error:
            for queued in batch:
                queued.error = error
            raise
        else:
            for queued, reply in zip(batch, replies, strict=True):
                if isinstance(reply, Exception):
                    queued.error = reply
                else:
                    queued.reply = reply
        finally:
            for queued in batch:
                queued.batch = None
                queued.ready.set()
            self._hand_on()
