"""What every channel layer shares: the ASGI 1.0 naming rules, capacity lookup, the
checks of a send (message copying and size limits are in copying.py), local delivery,
and the consumer pools of this process.

Subclasses implement the storage (`_send`, `receive`, groups, flush, statistics);
`send` here does the checks every backend must do, in one place.
"""

from __future__ import annotations

import fnmatch
import re
import secrets
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from .. import exceptions
from ..exceptions import InvalidChannelName
from .copying import (  # noqa: F401  (their home was here: importers still find them)
    ENVELOPE_ALLOWANCE,
    INT_LIMIT,
    MAX_MESSAGE_SIZE,
    MAX_PAYLOAD_SIZE,
    check_message,
    copy_message,
)

CHANNEL_NAME_RE = re.compile(r"[a-zA-Z0-9\-_.]+([?!][a-zA-Z0-9\-_.]*)?")
GROUP_NAME_RE = re.compile(r"[a-zA-Z0-9\-_.]+")
#: Longest channel or group name, in characters (ASGI 1.0: at least 100).
MAX_NAME_LENGTH = 100
#: Where delayed messages wait for the delay service (geventchannels.delay). Like a
#: process-local queue it takes the sends of many senders at once: it has local_capacity.
DELAY_CHANNEL = "asgi.delay"

#: Called with (full channel name, message) for a message to a process-local
#: channel whose reader lives in this process. Must not block, and must not change the
#: message: it may be shared (see ``BaseChannelLayer.attach_local``).
LocalHandler = Callable[[str, dict], None]


def non_local_name(name: str) -> str:
    """The part of a process-local channel name that readers receive on: "a!b" -> "a!"."""
    bang = name.find("!")
    return name if bang < 0 else name[: bang + 1]


class BaseChannelLayer:
    """Common configuration and checks of an ASGI 1.0 channel layer.

    Configuration (the CONFIG keys of CHANNEL_LAYERS are these keyword arguments):

    - ``expiry``: seconds a message waits in a channel before it is dropped.
    - ``group_expiry``: seconds a channel stays in a group after its last ``group_add``.
    - ``capacity``: messages a channel may hold before ``send`` raises ``ChannelFull``.
    - ``channel_capacity``: per-channel overrides, ``{pattern: capacity}``; a pattern is a
      glob string (``"http.request"``, ``"websocket.send!*"``) or a compiled regex.
    - ``local_capacity``: messages a process-local queue (``name!``) may hold; it serves
      every socket of a process, so it is larger than ``capacity``.
    - ``max_message_size``: bytes; larger messages raise ``MessageTooLarge`` (see
      MAX_MESSAGE_SIZE for the default and copy_message for how a message is sized).
    """

    extensions: ClassVar[list[str]] = ["groups", "flush", "statistics"]

    #: The exceptions of ASGI 1.0, reachable from the layer as the spec asks
    #: (``except channel_layer.ChannelFull``).
    ChannelFull = exceptions.ChannelFull
    MessageTooLarge = exceptions.MessageTooLarge

    #: True when the layer carries messages between processes (Redis); False when only
    #: this process sees them (in-memory), so its consumers must run in this process.
    crosses_processes: ClassVar[bool] = True

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict[Any, int] | None = None,
        local_capacity: int = 10_000,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ):
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.capacity = capacity
        self.local_capacity = local_capacity
        self.max_message_size = max_message_size
        self.channel_capacity = self._compile_capacities(channel_capacity or {})
        self._capacity_cache: dict[str, int] = {}
        self._valid_names: set[str] = set()
        self._local_handlers: dict[str, LocalHandler] = {}
        #: Whether a message queued for a consumer should warn that none runs here:
        #: until a consumer pool registers, on a layer that does not cross processes.
        self._warn_unconsumed = not self.crosses_processes
        #: The consumer pools of this process on this layer (see register_consumer_pool).
        self._consumer_pools: list[Any] = []
        #: Callables whose keys global_statistics() adds (the delay service's counts).
        self.statistics_sources: list[Callable[[], dict[str, float]]] = []
        from .membership import Memberships  # it builds on this module

        #: What this process's sockets are in, so that they leave when they close.
        self.memberships: Memberships = Memberships(self)

    # -- names -------------------------------------------------------------

    def valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        """Raise InvalidChannelName unless ``name`` is a channel name one may send to
        (or, with ``receive=True``, receive on: ``a!`` but never ``a!b``)."""
        if name in self._valid_names:
            if receive and "!" in name and not name.endswith("!"):
                raise InvalidChannelName(
                    "cannot receive on %r: receive on its process-local prefix %r"
                    % (name, non_local_name(name))
                )
            return True
        if type(name) is not str:
            raise InvalidChannelName("channel name must be a str, got %r" % (name,))
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidChannelName(
                "channel name %r is %d characters; names may have at most %d"
                % (name[:20] + "...", len(name), MAX_NAME_LENGTH)
            )
        if not CHANNEL_NAME_RE.fullmatch(name):
            raise InvalidChannelName(
                "invalid channel name %r: use ASCII letters, digits, '-', '_' and '.', with "
                "an optional '?' or '!' part" % (name,)
            )
        if name.endswith("?"):
            raise InvalidChannelName(
                "%r is a pattern, not a channel: a single-reader name has a random part "
                "after '?'; make one with new_channel(%r)" % (name, name)
            )
        if len(self._valid_names) < 100_000:
            self._valid_names.add(name)
        return self.valid_channel_name(name, receive)

    def valid_group_name(self, name: Any) -> bool:
        if type(name) is not str:
            raise InvalidChannelName("group name must be a str, got %r" % (name,))
        if len(name) > MAX_NAME_LENGTH or not GROUP_NAME_RE.fullmatch(name):
            raise InvalidChannelName(
                "invalid group name %r: use ASCII letters, digits, '-', '_' and '.', at most "
                "%d characters" % (name, MAX_NAME_LENGTH)
            )
        return True

    def new_channel(self, pattern: str) -> str:
        """A new single-reader channel name: ``pattern`` (which ends with '?') followed by
        128 random bits, so it exists nowhere yet and cannot be guessed."""
        if type(pattern) is not str or not pattern.endswith("?"):
            hint = ""
            if isinstance(pattern, str) and pattern.endswith("!"):
                hint = (
                    "; process-local ('!') names are made by the process that receives "
                    "them: see new_local_prefix()"
                )
            raise InvalidChannelName(
                "new_channel() pattern %r must end with '?'%s" % (pattern, hint)
            )
        name = pattern + secrets.token_urlsafe(16)
        self.valid_channel_name(name)
        return name

    def new_local_prefix(self, name: str) -> str:
        """A new process-local prefix for this process to ``attach_local`` (or receive
        on) and to build its channels under: ``name`` + '.' + 128 random bits + '!'.

        The names under it should carry random parts of their own: whoever learns one
        name learns the prefix."""
        if type(name) is not str or not GROUP_NAME_RE.fullmatch(name):
            raise InvalidChannelName(
                "new_local_prefix() name %r: use ASCII letters, digits, '-', '_' and '.'" % (name,)
            )
        prefix = "%s.%s!" % (name, secrets.token_urlsafe(16))
        self.valid_channel_name(prefix, receive=True)
        return prefix

    # -- capacity ----------------------------------------------------------

    @staticmethod
    def _compile_capacities(config: dict[Any, int]) -> list[tuple[re.Pattern, int]]:
        compiled = []
        for pattern, value in config.items():
            if isinstance(pattern, re.Pattern):
                compiled.append((pattern, int(value)))
            elif isinstance(pattern, str):
                compiled.append((re.compile(fnmatch.translate(pattern)), int(value)))
            else:
                raise TypeError(
                    "channel_capacity keys must be glob strings or compiled regexes, got %r"
                    % (pattern,)
                )
        return compiled

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel``: the first matching ``channel_capacity`` pattern,
        else ``local_capacity`` for process-local queues and asgi.delay, else ``capacity``."""
        try:
            return self._capacity_cache[channel]
        except KeyError:
            pass
        shared = channel.endswith("!") or channel == DELAY_CHANNEL
        value = self.local_capacity if shared else self.capacity
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                value = capacity
                break
        if len(self._capacity_cache) < 100_000:
            self._capacity_cache[channel] = value
        return value

    # -- sending -----------------------------------------------------------

    def send(self, channel: str, message: dict) -> None:
        """Put ``message`` on ``channel``. Never blocks; raises ChannelFull when the
        channel is at capacity and MessageTooLarge above ``max_message_size``."""
        if not isinstance(message, dict):
            raise TypeError("message must be a dict, got %s" % type(message).__name__)
        self.valid_channel_name(channel)
        if "!" in channel:
            handler = self._local_handlers.get(non_local_name(channel))
            if handler is not None:
                handler(channel, copy_message(message, self.max_message_size))
                return
        self._send(channel, message)

    def send_owned(self, channel: str, message: dict, checked: bool = False) -> None:
        """Like ``send``, for a message its caller built for this send and never reads
        or changes again (the server's own messages, a consumer's buffered copies): it
        is not copied, so the receiver may get that very dict.

        The channel name is checked as ``send`` does; the message's types and size
        too, unless ``checked`` says it came from ``copy_message`` with this layer's
        ``max_message_size``. Anyone else should use ``send``.
        """
        self.valid_channel_name(channel)
        if "!" in channel:
            handler = self._local_handlers.get(non_local_name(channel))
            if handler is not None:
                if not checked:
                    check_message(message, self.max_message_size)
                handler(channel, message)
                return
        self._send_owned(channel, message, checked)

    def _send(self, channel: str, message: dict) -> None:
        raise NotImplementedError

    def _send_owned(self, channel: str, message: dict, checked: bool) -> None:
        """Store a message for ``send_owned``. This default checks it, then stores it as
        ``send`` does, right for a layer that serialises messages anyway; a layer that
        keeps the dict itself overrides it to skip the copy."""
        if not checked:
            check_message(message, self.max_message_size)
        self._send(channel, message)

    # -- local delivery ----------------------------------------------------

    def attach_local(self, prefix: str, handler: LocalHandler) -> None:
        """Deliver messages for ``prefix`` (a process-local name ending in '!') straight
        to ``handler`` in this process instead of queueing them.

        Every message for ``prefix`` reaches ``handler``: sends made in this process go
        straight to it, and a layer whose storage other processes share (Redis) drains
        what they store for ``prefix`` and hands it over too, so the caller never
        receives on ``prefix`` itself. The server uses this for its reply channels: a
        consumer's reply reaches the socket's outbound queue without a trip through the
        layer's storage.

        ``handler`` must treat the message as read-only (it may keep it): one dict is
        shared by every local member of a group send, and ``send_owned`` passes the
        caller's own dict. The server's handlers only read messages.
        """
        if not prefix.endswith("!"):
            raise InvalidChannelName("local prefix %r must end with '!'" % (prefix,))
        self._local_handlers[prefix] = handler

    def detach_local(self, prefix: str) -> None:
        self._local_handlers.pop(prefix, None)

    def local_handler_for(self, channel: str) -> LocalHandler | None:
        if "!" not in channel or not self._local_handlers:
            return None
        return self._local_handlers.get(non_local_name(channel))

    # -- consumers -----------------------------------------------------------

    def register_consumer_pool(self, pool: object) -> None:
        """Called by a consumer pool (the Worker) of this process when it starts: from then
        on messages queued on a layer that does not cross processes have a consumer, and
        the warning that none runs here is not due. The messages the pool takes without
        the layer (``local_backlog``) count in this layer's statistics."""
        self._warn_unconsumed = False
        if pool is not None:
            self._consumer_pools.append(pool)

    def forget_consumer_pool(self, pool: object) -> None:
        """Called by a consumer pool when it stops."""
        if pool in self._consumer_pools:
            self._consumer_pools.remove(pool)

    def count_local(self, channel: str, full: bool = False) -> None:
        """Count in the statistics of ``channel`` a message that a consumer pool of this
        process took straight from the server, without the layer (``full``: one it
        refused, as a full channel would)."""

    def local_backlog(self, channel: str | None = None) -> tuple[int, float]:
        """Messages of ``channel`` (None: of every channel) that this process's consumer
        pools took without the layer and have not run yet, and the seconds the oldest has
        waited."""
        count, oldest = 0, 0.0
        for pool in self._consumer_pools:
            backlog = getattr(pool, "local_backlog", None)
            if backlog is not None:
                waiting, age = backlog(channel)
                count, oldest = count + waiting, max(oldest, age)
        return count, oldest

    # -- the rest of the contract -----------------------------------------

    def receive(
        self, channels: Iterable[str], block: bool = False, timeout: float | None = None
    ) -> tuple[str | None, dict | None]:
        """Return ``(channel, message)`` from the first of ``channels`` with a message,
        or ``(None, None)``. With ``block=True`` wait up to ``timeout`` seconds
        (``None``: until a message comes)."""
        raise NotImplementedError

    def receive_batch(
        self,
        channels: Iterable[str],
        count: int,
        block: bool = False,
        timeout: float | None = None,
    ) -> list[tuple[str, dict]]:
        """Up to ``count`` messages as ``receive`` would return them one by one, waiting
        (``block``, ``timeout``) only for the first: what the consumer pool takes for its
        ``count`` free greenlets in one go. Not part of ASGI."""
        channels = list(channels) if not isinstance(channels, str) else channels
        channel, message = self.receive(channels, block, timeout)
        batch: list[tuple[str, dict]] = []
        while channel is not None and message is not None:
            batch.append((channel, message))
            if len(batch) >= count:
                break
            channel, message = self.receive(channels)
        return batch

    def receive_many(
        self, channels: Iterable[str], block: bool = False
    ) -> tuple[str | None, dict | None]:
        """The name ``receive`` had before ASGI 1.0, kept (deprecated, as in asgiref 1.x)
        for Channels 1.x code that still calls it."""
        warnings.warn("receive_many() is deprecated: use receive()", DeprecationWarning, 2)
        return self.receive(channels, block)

    def group_add(self, group: str, channel: str) -> None:
        raise NotImplementedError

    def group_discard(self, group: str, channel: str) -> None:
        raise NotImplementedError

    def group_channels(self, group: str) -> list[str]:
        raise NotImplementedError

    def send_group(self, group: str, message: dict) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def global_statistics(self) -> dict[str, float]:
        raise NotImplementedError

    def extra_statistics(self) -> dict[str, float]:
        """What ``statistics_sources`` add to ``global_statistics()``."""
        extra: dict[str, float] = {}
        for source in self.statistics_sources:
            extra.update(source())
        return extra

    def channel_statistics(self, channel: str) -> dict[str, float]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and timers; the layer is not used afterwards."""

    def __repr__(self) -> str:
        return "<%s>" % type(self).__name__
