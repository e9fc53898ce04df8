"""Deadlines on blocking reads, kept by one sweeper greenlet instead of a timer per read.

A connection about to block reading (a request head, a piece of a request body) says until
when it may wait; once its read returns it says it is done. The sweeper runs only while
some connection waits, wakes a few times per timeout, and throws the deadline's exception
into the read of each connection past its deadline. Registering and clearing a deadline
costs two dict operations, so reads that do not block cost next to nothing.
"""

from __future__ import annotations

import time
from typing import Any

import gevent


class Deadlines:
    """The connections of one process blocked in a read, in the order they started
    waiting; each has a ``greenlet``. Deadlines are :func:`time.monotonic` times.
    ``exception`` (a BaseException, so no ``except Exception`` between the read and the
    handler swallows it) is thrown into the read of a connection past its deadline."""

    def __init__(self, shortest_timeout: float, exception: type[BaseException]):
        self.exception = exception
        self.deadlines: dict[Any, float] = {}
        self._doomed: set[Any] = set()
        self._sweeper: gevent.Greenlet | None = None
        #: Seconds between two sweeps: deadlines are kept within about this.
        self.tick = min(max(shortest_timeout / 4, 0.05), 0.5)
        #: Reads interrupted at their deadline so far.
        self.expired = 0

    def wait(self, connection: Any, deadline: float) -> None:
        """``connection`` is about to block reading, until ``deadline`` at most; a
        connection already waiting keeps its place in the line with the new deadline."""
        self.deadlines[connection] = deadline
        if self._sweeper is None:
            self._sweeper = gevent.spawn(self._sweep)

    def done(self, connection: Any) -> None:
        """``connection``'s read returned (or it gave up): its deadline no longer applies."""
        self.deadlines.pop(connection, None)
        if self._doomed:
            self._doomed.discard(connection)

    def _interrupt_soon(self, connection: Any, late: bool = False) -> None:
        self._doomed.add(connection)
        gevent.get_hub().loop.run_callback(self._interrupt, connection, late)

    def _interrupt(self, connection: Any, late: bool) -> None:
        # Runs in the hub, so the connection's greenlet is not running: while it is in
        # ``deadlines`` it is blocked in the read, where the exception lands. A ``late``
        # one whose read returned and that waits again with a new deadline is spared.
        self._doomed.discard(connection)
        deadline = self.deadlines.get(connection)
        if deadline is None or late and deadline > time.monotonic():
            return
        del self.deadlines[connection]
        connection.greenlet.throw(self.exception())

    def _sweep(self) -> None:
        try:
            while True:
                gevent.sleep(self.tick)  # first: the connection that started it is likely done
                if not self.deadlines:
                    return
                now = time.monotonic()
                late = [c for c, deadline in self.deadlines.items() if deadline <= now]
                for connection in late:
                    if connection not in self._doomed:
                        self.expired += 1
                        self._interrupt_soon(connection, late=True)
        finally:
            self._sweeper = None
