"""Watchdogs of the consumer pool: a deadline for consumers that never return, and a
warning naming the consumer that blocks the event loop.

**Deadline** (``CONSUMER_TIMEOUT``). One greenlet per pool looks at the consumers running
now (``ConsumerCalls.running``, which the pool keeps anyway) every min(1 s, timeout / 4),
so a message costs nothing more. A consumer past the deadline gets :class:`ConsumerDeadline`
thrown where it waits, from the hub as ``Greenlet.kill`` does, but only if its greenlet
still runs that same call. ``ConsumerCalls.handle`` catches it, drops the consumer's
buffered sends and hands it to :meth:`DeadlineWatch.stopped`; the pool greenlet then goes
on with its next message. A consumer that never yields cannot be stopped this way.

**Blocked loop** (``BLOCKED_LOOP_WARNING``). A libev timer on the hub notes when the loop
last ran; a native thread (it must run while the loop cannot) checks it, and when the
loop has not run for the threshold, finds the ``ConsumerCalls.handle`` frame among the
hub thread's frames and logs that consumer with its stack, once per episode. Nothing runs
on a greenlet switch: the cost is a timer callback every threshold / 4.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from time import monotonic
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

import gevent
from gevent import get_hub
from gevent.monkey import get_original

from . import conf, logs
from .utils import name_that_thing

if TYPE_CHECKING:
    from .consuming import ConsumerCalls
    from .message import Message

logger = logging.getLogger("geventchannels.worker")


class ConsumerDeadline(BaseException):
    """Thrown into a consumer that ran past ``CONSUMER_TIMEOUT``. A BaseException, so
    that the consumer's ``except Exception`` does not swallow it."""

    def __init__(self, watch: DeadlineWatch, seconds: float, stack: str):
        super().__init__(f"consumer stopped after {seconds:.1f} s (CONSUMER_TIMEOUT)")
        self.watch = watch
        self.seconds = seconds
        self.stack = stack


def _handle_code() -> CodeType:
    from .consuming import ConsumerCalls

    return ConsumerCalls.handle.__code__


def consumer_stack(frame: FrameType, handle: CodeType) -> tuple[str, FrameType | None]:
    """The stack from ``ConsumerCalls.handle`` down to ``frame`` (all of it when handle is
    not in it), formatted as a traceback, and handle's frame."""
    frames: list[FrameType] = []
    found: FrameType | None = None
    current: FrameType | None = frame
    while current is not None:
        frames.append(current)
        if current.f_code is handle:
            found = current
            break
        current = current.f_back
    frames.reverse()
    summary = traceback.StackSummary.extract((f, f.f_lineno) for f in frames)
    return "".join(summary.format()).rstrip(), found


class DeadlineWatch:
    """Stops the consumers of one pool that run longer than ``timeout`` seconds."""

    def __init__(self, calls: ConsumerCalls, timeout: float):
        self.calls = calls
        self.timeout = timeout
        #: Consumers stopped at the deadline (their messages failed).
        self.stopped_count = 0
        #: Greenlet -> the running entry it was told to stop: once per call.
        self._thrown: dict[gevent.Greenlet, tuple[Callable, float]] = {}
        #: Consumer name -> the Tally counting its repeats.
        self._repeats: dict[str, logs.Tally] = {}
        self._handle = _handle_code()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._watch)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _watch(self) -> None:
        period = min(1.0, self.timeout / 4)
        running, thrown = self.calls.running, self._thrown
        run_callback = get_hub().loop.run_callback
        while True:
            gevent.sleep(period)
            for greenlet in [g for g, entry in thrown.items() if running.get(g) is not entry]:
                del thrown[greenlet]
            late = monotonic() - self.timeout
            for greenlet, entry in list(running.items()):
                if entry[1] <= late and thrown.get(greenlet) is not entry:
                    thrown[greenlet] = entry
                    run_callback(self._throw, greenlet, entry)

    def _throw(self, greenlet: gevent.Greenlet, entry: tuple[Callable, float]) -> None:
        """In the hub: the call may have ended since the scan, and its greenlet gone on
        to another message, which must not be stopped."""
        if greenlet.dead or self.calls.running.get(greenlet) is not entry:
            return
        frame = greenlet.gr_frame
        stack = consumer_stack(frame, self._handle)[0] if frame is not None else ""
        greenlet.throw(ConsumerDeadline(self, monotonic() - entry[1], stack))

    def stopped(self, stop: ConsumerDeadline, message: Message, consumer: Callable) -> None:
        """A consumer was stopped: log it (with its stack the first time, then counts)
        and answer the client waiting for it."""
        self.stopped_count += 1
        name = self.calls.name(consumer)
        channel = message.channel_name
        repeats = self._repeats.get(name)
        if repeats is None:
            logger.warning(
                "consumer %s ran %.1f s on %s, past CONSUMER_TIMEOUT (%g s): stopped, its "
                "message failed. Where it was:\n%s",
                name,
                stop.seconds,
                channel,
                self.timeout,
                stop.stack,
            )
            repeats = self._repeats[name] = logs.Tally(
                "%d more consumers stopped at CONSUMER_TIMEOUT in the last %g s: %s on %s",
                logger,
                on_idle=lambda: self._repeats.pop(name, None),
            )
            repeats.add(logged=True)
        else:
            repeats.add(logs.TALLY_INTERVAL, name, channel)
        _close_database_connections()
        _answer(message)


def _close_database_connections() -> None:
    """A query the deadline cut short leaves its connection mid-protocol: never reuse it
    (with CONN_MAX_AGE > 0 the pool greenlet would)."""
    if "django.db" not in sys.modules:
        return
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except Exception:
            logger.exception("closing database connection %r failed", connection.alias)


def _answer(message: Message) -> None:
    """Answer the client of a stopped ``websocket.connect`` or ``http.request`` consumer
    at once, as when a consumer fails: a server fault (1011: a handshake refused with
    500, an accepted socket closed), and for HTTP, try again later (1013: 503, or a
    started response cut)."""
    from .consuming import INTERNAL_ERROR, TRY_AGAIN_LATER, close_client

    code = {"websocket.connect": INTERNAL_ERROR, "http.request": TRY_AGAIN_LATER}.get(
        message.channel_name
    )
    if code is not None:
        close_client(message, code)


class LoopMonitor:
    """Warns when the hub's event loop has not run for ``threshold`` seconds, naming the
    consumer that runs. One per process, started by the first pool, stopped with the last."""

    def __init__(self) -> None:
        self.threshold = 0.0
        self.users = 0
        #: When the loop last ran the timer (written in the hub, read by the thread).
        self.beat_at = 0.0
        #: Bumped to end the thread (when the last pool goes, or after a fork).
        self.generation = 0
        self._timer: Any = None
        self._period = 0.0
        self._hub_thread = 0
        self._pid = 0
        self._handle: CodeType | None = None

    def acquire(self, threshold: float) -> None:
        """Called in the hub's thread by a pool that starts; the latest threshold wins."""
        self.users += 1
        self.threshold = threshold
        self._handle = self._handle or _handle_code()
        period = max(0.01, threshold / 4)
        self.beat_at = monotonic()
        if self._timer is None or self._pid != os.getpid() or period != self._period:
            self._stop_timer()
            self._period = period
            self._timer = get_hub().loop.timer(period, period, ref=False)
            self._timer.start(self._beat)
            self._hub_thread = get_original("_thread", "get_ident")()
            self._pid = os.getpid()
            self.generation += 1
            start = get_original("_thread", "start_new_thread")
            start(self._run, (self.generation, period))

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.users = 0
            self.end_thread()
            self._stop_timer()

    def end_thread(self) -> None:
        """Stop warning (also at exit: the loop no longer runs while Python finalizes)."""
        self.generation += 1

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.stop()
            timer.close()

    def _beat(self) -> None:
        self.beat_at = monotonic()

    def _run(self, generation: int, period: float) -> None:
        """The native thread: wake every ``period``, warn once per episode."""
        sleep = get_original("time", "sleep")
        warned_for = None
        while self.generation == generation:
            sleep(period)
            beat_at = self.beat_at
            stalled = monotonic() - beat_at
            if stalled >= self.threshold and warned_for != beat_at:
                warned_for = beat_at
                if self.generation == generation:
                    try:
                        self._warn(stalled)
                    except Exception:
                        logger.exception("the blocked event loop warning failed")

    def _warn(self, stalled: float) -> None:
        frame = sys._current_frames().get(self._hub_thread)
        if frame is None:
            return
        assert self._handle is not None
        stack, handle = consumer_stack(frame, self._handle)
        if handle is None:
            logger.warning(
                "the event loop has not run for %.1f s (BLOCKED_LOOP_WARNING %g s): no "
                "consumer runs; the code blocking it:\n%s",
                stalled,
                self.threshold,
                stack,
            )
            return
        names = handle.f_locals
        logger.warning(
            "the event loop has not run for %.1f s (BLOCKED_LOOP_WARNING %g s): consumer %s "
            "on %s blocks every socket and consumer of this process; it cannot be stopped, "
            "only named. Where it is:\n%s",
            stalled,
            self.threshold,
            name_that_thing(names.get("consumer")),
            names.get("channel"),
            stack,
        )


#: The process's loop monitor.
loop_monitor = LoopMonitor()
atexit.register(loop_monitor.end_thread)


class PoolWatch:
    """What :func:`start_for_pool` started for one pool, for :func:`release`."""

    def __init__(self, deadline: DeadlineWatch | None, monitors_loop: bool):
        self.deadline = deadline
        self.monitors_loop = monitors_loop


def start_for_pool(calls: ConsumerCalls, overrides: Mapping[str, Any]) -> PoolWatch:
    """Start the watchdogs the settings ask for, for a pool that starts."""
    deadline = None
    timeout = conf.get("CONSUMER_TIMEOUT", overrides)
    if timeout:
        deadline = DeadlineWatch(calls, timeout)
        deadline.start()
    threshold = conf.get("BLOCKED_LOOP_WARNING", overrides)
    if threshold:
        loop_monitor.acquire(threshold)
    return PoolWatch(deadline, bool(threshold))


def release(watch: PoolWatch | None) -> None:
    """Stop what :func:`start_for_pool` started, once (None: nothing was)."""
    if watch is None:
        return
    if watch.deadline is not None:
        watch.deadline.stop()
        watch.deadline = None
    if watch.monitors_loop:
        watch.monitors_loop = False
        loop_monitor.release()
