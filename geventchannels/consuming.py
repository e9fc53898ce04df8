"""One message through its consumer, as the pool runs it: routing, the consumer's
buffered sends, the consumer signals, and what each way of ending means.

| the consumer...                          | then                                         |
|------------------------------------------|----------------------------------------------|
| returns                                  | its buffered messages are sent               |
| raises ConsumeLater                      | they are dropped, the message is put back    |
| raises a ChannelSocketException          | they are sent, then the exception acts       |
| raises DenyConnection (websocket.connect)| they are dropped, the handshake is refused   |
| is stopped at CONSUMER_TIMEOUT           | they are dropped, it is logged (watchdog.py) |
| cannot reach the layer (raises, or its   | they are dropped, counted (no traceback); a  |
| sends find ChannelLayerUnavailable)      | handshake or routed HTTP request gets 503, a |
|                                          | WebSocket close 1013                         |
| raises anything else                     | they are dropped, the traceback is logged;   |
|                                          | a handshake or routed HTTP request gets 500  |

A consumer that fails again with the same error (same type and text) within
logs.TALLY_INTERVAL is not logged again in full: the repeats are counted, one line per
interval, until an interval passes without one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING

import gevent
from gevent import getcurrent

from . import logs
from .channel import discard_buffered, flush_buffered, start_buffering
from .exceptions import (
    ChannelFull,
    ChannelLayerUnavailable,
    ChannelSocketException,
    ConsumeLater,
    DenyConnection,
)
from .message import Message
from .signals import send_consumer_finished, send_consumer_started
from .utils import name_that_thing
from .watchdog import ConsumerDeadline

if TYPE_CHECKING:
    from .layers.base import BaseChannelLayer
    from .routing import Router

logger = logging.getLogger("geventchannels.worker")

#: Content key counting how often ConsumeLater put a message back (as in Channels 1.x).
RETRIES_KEY = "__retries__"

#: Close codes a failed consumer's socket or routed HTTP request gets; before the
#: handshake or response is answered the server turns them into 1013: 503 and 1011: 500
#: (server/handshake.py REFUSALS, server/http.py FAILURES).
TRY_AGAIN_LATER, INTERNAL_ERROR = 1013, 1011
#: Channels whose client waits for the consumer's answer: refused at once if it raises.
ANSWERED = ("websocket.connect", "http.request")

#: Puts a message back on its channel for ConsumeLater; raises ChannelFull when full.
PutBack = Callable[[str, dict], None]


class ConsumerCalls:
    """Runs messages through the consumers ``router`` finds, for one pool.

    ``sender`` is what the consumer signals are sent with (the Worker class);
    ``put_back_offered`` is where ConsumeLater puts a message the server offered the
    pool directly (others go back through ``layer``).
    """

    def __init__(
        self,
        router: Router,
        layer: BaseChannelLayer,
        sender: type,
        consume_later_limit: int,
        put_back_offered: PutBack,
    ):
        self.router = router
        self.layer = layer
        self.sender = sender
        self.consume_later_limit = consume_later_limit
        self.put_back_offered = put_back_offered
        self._names: dict[Callable, str] = {}
        #: Greenlet -> (the consumer it runs now, since when): for the full pool warning.
        self.running: dict[gevent.Greenlet, tuple[Callable, float]] = {}
        #: (consumer name, error type, error text) -> the Tally counting its repeats.
        self._failures: dict[tuple[str, str, str], logs.Tally] = {}
        self._unreachable = logs.Tally(
            "%d consumer run(s) could not reach the channel layer (latest: %s on %s: %s); "
            "their sends were dropped, their clients told to try again later (503, 1013)",
            logger,
        )

    def handle(self, channel: str, content: dict, offered: bool = False) -> None:
        """Run the consumer routed for one message, with its sends buffered."""
        try:
            match = self.router.match_content(channel, content)
        except Exception:
            logger.exception("routing a message on %s failed; message ignored", channel)
            return
        if match is None:
            logger.warning(
                "no route matches the message on %s (keys: %s); ignored",
                channel,
                ", ".join(sorted(content)),
            )
            return
        consumer, kwargs = match
        message = Message(content, channel, self.layer)
        later = False
        start_buffering()
        running = getcurrent()
        self.running[running] = (consumer, monotonic())
        try:
            try:
                send_consumer_started(self.sender)
                consumer(message, **kwargs)
            finally:
                # At once: CONSUMER_TIMEOUT stops only the consumer, never what follows.
                self.running.pop(running, None)
        except ConsumeLater:
            later = True
            discard_buffered()
            self._consume_later(channel, content, offered)
        except ChannelSocketException as error:
            self._flush(message, consumer)
            self._run_socket_exception(error, message, consumer)
        except DenyConnection:
            discard_buffered()
            self._deny(message, consumer)
        except ChannelLayerUnavailable as error:
            discard_buffered()
            self._unavailable(message, consumer, error)
        except Exception as error:
            discard_buffered()
            self._failed(consumer, channel, error)
            if channel in ANSWERED:
                close_client(message, INTERNAL_ERROR)
        except ConsumerDeadline as stop:
            discard_buffered()
            stop.watch.stopped(stop, message, consumer)
        except BaseException:
            discard_buffered()
            raise
        else:
            self._flush(message, consumer)
        finally:
            try:
                send_consumer_finished(self.sender)
            except Exception:
                logger.exception(
                    "a consumer_finished receiver failed after %s", self.name(consumer)
                )
            if channel == "websocket.disconnect" and not later:
                self._socket_closed(message)

    def _failed(self, consumer: Callable, channel: str, error: Exception) -> None:
        """Log a consumer's error with its traceback, or count it when the same consumer
        raised the same error lately (a consumer failing on every message)."""
        name = self.name(consumer)
        key = (name, type(error).__qualname__, str(error))
        repeats = self._failures.get(key)
        if repeats is None:
            logger.error(
                "error in consumer %s handling a message on %s", name, channel, exc_info=error
            )
            repeats = self._failures[key] = logs.Tally(
                "the same error %d more times in the last %g s: consumer %s raised %s on %s",
                logger,
                on_idle=lambda: self._failures.pop(key, None),
            )
            repeats.add(logged=True)
        else:
            repeats.add(logs.TALLY_INTERVAL, name, _shown(error), channel)

    def _flush(self, message: Message, consumer: Callable) -> None:
        unavailable = flush_buffered()
        if unavailable is not None:
            self._unavailable(message, consumer, unavailable)

    def _unavailable(
        self, message: Message, consumer: Callable, error: ChannelLayerUnavailable
    ) -> None:
        """A consumer that could not reach the layer (Redis down) is counted, not logged
        with a traceback (the layer logs the outage once), and its client is told to try
        again later: a handshake or routed HTTP request gets 503, an open socket 1013."""
        channel = message.channel_name
        self._unreachable.add(self.name(consumer), channel, error)
        if channel in ANSWERED or channel == "websocket.receive":
            close_client(message, TRY_AGAIN_LATER)

    @staticmethod
    def _socket_closed(message: Message) -> None:
        """The socket's channel session goes with it, whether or not its disconnect
        consumer used one (sessions.socket_closed knows when there is nothing to do)."""
        from .sessions import socket_closed

        try:
            socket_closed(message)
        except Exception:
            logger.exception(
                "deleting the channel session of %s failed", message.content.get("reply_channel")
            )

    def _consume_later(self, channel: str, content: dict, offered: bool) -> None:
        retries = content.get(RETRIES_KEY, 0) + 1
        if retries > self.consume_later_limit:
            logger.warning(
                "message on %s dropped: its consumer raised ConsumeLater %d times "
                "(CONSUME_LATER_LIMIT)",
                channel,
                retries - 1,
            )
            return
        content[RETRIES_KEY] = retries
        put_back = self.put_back_offered if offered else self.layer.send
        for attempt in range(10):
            try:
                put_back(channel, content)
                break
            except ChannelFull:
                gevent.sleep(0.01 * (attempt + 1))
        else:
            logger.warning(
                "message on %s dropped: ConsumeLater could not put it back, the "
                "channel stayed full",
                channel,
            )
            return
        # Let other greenlets run before the message comes round again.
        gevent.sleep(0)

    def _run_socket_exception(
        self, error: ChannelSocketException, message: Message, consumer: Callable
    ) -> None:
        try:
            error.run(message)
        except Exception:
            logger.exception(
                "consumer %s raised %s on %s, and acting on it failed",
                self.name(consumer),
                type(error).__name__,
                message.channel_name,
            )

    def _deny(self, message: Message, consumer: Callable) -> None:
        if message.channel_name != "websocket.connect" or message.reply_channel is None:
            logger.error(
                "consumer %s raised DenyConnection on %s; it is only meaningful in "
                "a websocket.connect consumer",
                self.name(consumer),
                message.channel_name,
            )
            return
        try:
            message.reply_channel.send({"close": True}, immediately=True)
        except Exception:
            logger.exception("could not refuse the WebSocket of %s", message.reply_channel)

    def running_report(self, limit: int = 10) -> str:
        """The consumers running now and for how long, the longest-running first:
        ``app.slow for 6.1 s (x3), app.other for 2.0 s``."""
        now = monotonic()
        longest: dict[str, tuple[float, int]] = {}
        for consumer, since in list(self.running.values()):
            name = self.name(consumer)
            seconds, count = longest.get(name, (0.0, 0))
            longest[name] = (max(seconds, now - since), count + 1)
        ranked = sorted(longest.items(), key=lambda item: -item[1][0])
        shown = [
            f"{name} for {seconds:.1f} s" + (f" (x{count})" if count > 1 else "")
            for name, (seconds, count) in ranked[:limit]
        ]
        if len(ranked) > limit:
            shown.append(f"and {len(ranked) - limit} more")
        return ", ".join(shown) or "none"

    def name(self, consumer: Callable) -> str:
        """The consumer's dotted name, for log lines (remembered per consumer)."""
        try:
            return self._names[consumer]
        except (KeyError, TypeError):
            name = name_that_thing(consumer)
            try:
                self._names[consumer] = name
            except TypeError:
                pass
            return name


def close_client(message: Message, code: int) -> None:
    """Close (or refuse) the message's WebSocket, or answer its routed HTTP request, with
    ``code``; if its reply channel is behind the unreachable layer too, its server's own
    timeouts answer it."""
    if message.reply_channel is not None:
        try:
            message.reply_channel.send({"close": code}, immediately=True)
        except Exception as error:
            logger.debug("could not close %s: %s", message.reply_channel, error)


def _shown(error: Exception, limit: int = 200) -> str:
    """The error as a log line shows it: ValueError('boom'), cut to ``limit``."""
    text = repr(error)
    return text if len(text) <= limit else text[: limit - 3] + "..."
