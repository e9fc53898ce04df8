"""What every channel layer shares: the ASGI 1.0 naming rules, capacity lookup,
message copying and size limits, and local delivery.

Subclasses implement the storage (`_send`, `receive`, groups, flush, statistics);
`send` here does the checks every backend must do, in one place.
"""

from __future__ import annotations

import fnmatch
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from ..exceptions import InvalidChannelName, MessageTooLarge

CHANNEL_NAME_RE = re.compile(r"^[a-zA-Z\d\-_.]+((\?|\!)[\d\w\-_.]*)?$")
GROUP_NAME_RE = re.compile(r"^[a-zA-Z\d\-_.]+$")
MAX_NAME_LENGTH = 100
MAX_MESSAGE_SIZE = 1024 * 1024

#: Called with (full channel name, message) for a message to a process-local
#: channel whose reader lives in this process. Must not block, and must not change the
#: message: it may be shared (see ``BaseChannelLayer.attach_local``).
LocalHandler = Callable[[str, dict], None]


def non_local_name(name: str) -> str:
    """The part of a process-local channel name that readers receive on: "a!b" -> "a!"."""
    bang = name.find("!")
    return name if bang < 0 else name[: bang + 1]


def copy_message(message: dict, limit: int = MAX_MESSAGE_SIZE) -> dict:
    """Copy a message so later changes by the sender cannot reach the receiver, and
    check its size on the way (the same walk does both).

    Containers are copied; str, bytes, numbers, bool and None are immutable and
    shared. The size is an estimate close to the msgpack encoding.
    """
    try:
        return _copy_value(message, [limit])
    except _OverBudget:
        raise _too_large(limit) from None


def check_message(message: dict, limit: int = MAX_MESSAGE_SIZE) -> None:
    """Check a message's types and size as copy_message does, without copying it: for
    messages whose sender hands them over and never touches them again."""
    if not isinstance(message, dict):
        raise TypeError("message must be a dict, got %s" % type(message).__name__)
    if _measure(message) > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> MessageTooLarge:
    return MessageTooLarge(
        "message is larger than the layer's limit of %d bytes; send large data "
        "out of band or raise max_message_size" % limit
    )


def _measure(value: Any) -> int:
    """The size copy_message would count for ``value``; raises TypeError for values a
    message may not hold, or that a copy would convert (tuple, bytearray, subclasses of
    dict and list), so that receivers see the same types either way."""
    kind = type(value)
    if kind is dict:
        size = 5
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"channel message keys must be str, got {type(key).__name__}")
            kind = type(item)
            if kind is str or kind is bytes:
                size += len(key) + len(item) + 7
            elif kind is int or kind is bool or kind is float or item is None:
                size += len(key) + 11
            else:
                size += len(key) + 2 + _measure(item)
        return size
    if kind is list:
        size = 5
        for item in value:
            kind = type(item)
            if kind is str or kind is bytes:
                size += len(item) + 5
            elif kind is int or kind is bool or kind is float or item is None:
                size += 9
            else:
                size += _measure(item)
        return size
    if isinstance(value, str | bytes):
        return len(value) + 5
    if isinstance(value, _SCALARS):
        return 9
    raise TypeError(
        "messages handed over without a copy may only contain dict, list, str, bytes, "
        "int, float, bool and None; got %s (send it with send() instead)" % kind.__name__
    )


class _OverBudget(Exception):
    pass


_SCALARS = (str, bytes, int, float, bool, type(None))


def _copy_value(value: Any, budget: list[int]) -> Any:
    kind = type(value)
    if kind is dict:
        value = _copy_dict(value, budget)
    elif kind is list or kind is tuple:
        value = _copy_list(value, budget)
    elif isinstance(value, str | bytes):
        budget[0] -= len(value) + 5
    elif isinstance(value, _SCALARS):
        budget[0] -= 9
    elif isinstance(value, bytearray | memoryview):
        value = bytes(value)
        budget[0] -= len(value) + 5
    elif isinstance(value, dict):
        return _copy_value(dict(value), budget)
    elif isinstance(value, list | tuple):
        return _copy_value(list(value), budget)
    else:
        raise TypeError(
            "channel messages may only contain dict, list, str, bytes, int, float, bool "
            "and None; got %s" % kind.__name__
        )
    if budget[0] < 0:
        raise _OverBudget
    return value


# The two loops below are the send hot path: plain str/bytes/number values are sized
# inline and only other values pay for a call. The sizes match _copy_value's.


def _copy_dict(value: dict, budget: list[int]) -> dict:
    copied = {}
    size = 5
    for key, item in value.items():
        if type(key) is not str:
            raise TypeError(f"channel message keys must be str, got {type(key).__name__}")
        kind = type(item)
        if kind is str or kind is bytes:
            size += len(key) + len(item) + 7
        elif kind is int or kind is bool or kind is float or item is None:
            size += len(key) + 11
        else:
            budget[0] -= size + len(key) + 2
            size = 0
            item = _copy_value(item, budget)
        copied[key] = item
    budget[0] -= size
    return copied


def _copy_list(value: list | tuple, budget: list[int]) -> list:
    copied = []
    append = copied.append
    size = 5
    for item in value:
        kind = type(item)
        if kind is str or kind is bytes:
            size += len(item) + 5
        elif kind is int or kind is bool or kind is float or item is None:
            size += 9
        else:
            budget[0] -= size
            size = 0
            item = _copy_value(item, budget)
        append(item)
    budget[0] -= size
    return copied


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
    - ``max_message_size``: bytes; larger messages raise ``MessageTooLarge``.
    """

    extensions: list[str] = ["groups", "flush", "statistics"]

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
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
        if len(name) >= MAX_NAME_LENGTH:
            raise InvalidChannelName(
                "channel name %r is %d characters; names must be shorter than %d"
                % (name[:20] + "...", len(name), MAX_NAME_LENGTH)
            )
        if not CHANNEL_NAME_RE.match(name):
            raise InvalidChannelName(
                "invalid channel name %r: use letters, digits, '-', '_' and '.', with an "
                "optional '?' or '!' part" % (name,)
            )
        if len(self._valid_names) < 100_000:
            self._valid_names.add(name)
        return self.valid_channel_name(name, receive)

    def valid_group_name(self, name: Any) -> bool:
        if type(name) is not str:
            raise InvalidChannelName("group name must be a str, got %r" % (name,))
        if len(name) >= MAX_NAME_LENGTH or not GROUP_NAME_RE.match(name):
            raise InvalidChannelName(
                "invalid group name %r: use letters, digits, '-', '_' and '.', fewer than "
                "%d characters" % (name, MAX_NAME_LENGTH)
            )
        return True

    def new_channel(self, pattern: str) -> str:
        """A new unique channel name: ``pattern`` ends with '?' (single reader) or '!'
        (process-local, received on ``pattern`` itself)."""
        if not isinstance(pattern, str) or not pattern.endswith(("?", "!")):
            raise InvalidChannelName(
                "new_channel() pattern %r must end with '?' or '!'" % (pattern,)
            )
        name = pattern + secrets.token_hex(8)
        self.valid_channel_name(name)
        return name

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
        else ``local_capacity`` for process-local queues, else ``capacity``."""
        try:
            return self._capacity_cache[channel]
        except KeyError:
            pass
        value = self.local_capacity if channel.endswith("!") else self.capacity
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

    # -- the rest of the contract -----------------------------------------

    def receive(
        self, channels: Iterable[str], block: bool = False, timeout: float | None = None
    ) -> tuple[str | None, dict | None]:
        """Return ``(channel, message)`` from the first of ``channels`` with a message,
        or ``(None, None)``. With ``block=True`` wait up to ``timeout`` seconds
        (``None``: until a message comes)."""
        raise NotImplementedError

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

    def channel_statistics(self, channel: str) -> dict[str, float]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and timers; the layer is not used afterwards."""

    def __repr__(self) -> str:
        return "<%s>" % type(self).__name__
