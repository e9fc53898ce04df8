"""Channel and Group: named destinations for messages, and consumer atomicity.

Inside a consumer run by the worker, ``send()`` does not reach the layer at once: the
message is kept in the consumer greenlet's buffer and sent when the consumer returns, or
dropped if it raises, so a consumer that fails half-way sends nothing. ``immediately=True``
sends at once. The buffer belongs to one greenlet; other greenlets are unaffected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from gevent import getcurrent

from . import DEFAULT_CHANNEL_LAYER
from .delay.messages import DELAY_CHANNEL, delay_message
from .exceptions import ChannelLayerUnavailable
from .layers.base import BaseChannelLayer, copy_message

logger = logging.getLogger(__name__)

#: A send kept for later: (layer, channel or group name, content copy, is a group send).
BufferedSend = tuple[BaseChannelLayer, str, dict, bool]

#: Buffered sends of each greenlet that runs a consumer: greenlet -> its sends.
#: A dict keyed by greenlet is the cheapest greenlet-local lookup (faster than a greenlet
#: attribute or gevent's local, measured).
pending_sends: dict[object, list[BufferedSend]] = {}


def start_buffering() -> list[BufferedSend]:
    """Buffer this greenlet's sends until :func:`flush_buffered` or :func:`discard_buffered`."""
    buffer: list[BufferedSend] = []
    pending_sends[getcurrent()] = buffer
    return buffer


def flush_buffered() -> ChannelLayerUnavailable | None:
    """Send what this greenlet buffered and stop buffering. A send that fails (the
    channel is full) is logged and does not stop the others. Sends that find the layer
    unreachable are not logged one by one: the first such error is returned, for the
    caller to report once (the consumer pool counts it as the consumer's failure)."""
    buffer = pending_sends.pop(getcurrent(), None)
    if not buffer:
        return None
    unavailable = None
    for layer, name, content, group in buffer:
        try:
            if group:
                layer.send_group(name, content)
            else:
                # The buffer's copy was made for this send and nobody else holds it.
                layer.send_owned(name, content, checked=True)
        except ChannelLayerUnavailable as error:
            unavailable = unavailable or error
        except Exception as error:
            logger.error(
                "message from a consumer to %r was not sent: %s: %s",
                name,
                type(error).__name__,
                error,
            )
    return unavailable


def discard_buffered() -> None:
    """Drop what this greenlet buffered and stop buffering."""
    pending_sends.pop(getcurrent(), None)


def _keep(
    buffer: list[BufferedSend], layer: BaseChannelLayer, name: str, content: dict, group: bool
) -> None:
    """Keep a send for when the running consumer returns. The name and the message are
    checked now, as the layer would check them, so that an error points at the send."""
    if not isinstance(content, dict):
        raise TypeError(f"only dicts can be sent on a channel, got {type(content).__name__}")
    if group:
        layer.valid_group_name(name)
    else:
        layer.valid_channel_name(name)
    buffer.append((layer, name, copy_message(content, layer.max_message_size), group))


def _layer_for(alias: str, channel_layer: BaseChannelLayer | None) -> BaseChannelLayer:
    if channel_layer is not None:
        return channel_layer
    from .asgi import channel_layers

    return channel_layers[alias].channel_layer


class _Named:
    """What Channel and Group share: a name on a layer, compared and hashed by name
    (equal to a str of the same name)."""

    __slots__ = ("name", "alias", "channel_layer")

    def __init__(
        self,
        name: str | bytes,
        alias: str = DEFAULT_CHANNEL_LAYER,
        channel_layer: BaseChannelLayer | None = None,
    ):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        self.name = name
        self.alias = alias
        self.channel_layer = _layer_for(alias, channel_layer)

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self):
            return self.name == other.name
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Channel(_Named):
    """A channel of a channel layer, by name: ``Channel("chat").send({"text": "hi"})``."""

    __slots__ = ()

    def send(self, content: dict, immediately: bool = False, delay: float | None = None) -> None:
        """Send ``content`` (a dict) now, or when the running consumer returns; with
        ``delay`` (seconds), that much later, through asgi.delay (docs/delay.md)."""
        name = self.name
        if delay is not None:
            content = delay_message(name, content, delay, self.channel_layer)
            name = DELAY_CHANNEL
        buffer = None if immediately else pending_sends.get(getcurrent())
        if buffer is None:
            self.channel_layer.send(name, content)
        else:
            _keep(buffer, self.channel_layer, name, content, False)

    @staticmethod
    def consumer(channels: str | Iterable[str], *more: str, **filters: Any) -> Callable:
        """``@Channel.consumer("chat.receive", path=...)``: the routing decorator of the
        first Channels preview, the same as :func:`geventchannels.routing.consumer`."""
        from .routing import consumer

        return consumer(channels, *more, **filters)


class Group(_Named):
    """A named set of channels that receive the same messages:
    ``Group("room-1").add(message.reply_channel)``."""

    __slots__ = ()

    def add(self, channel: Channel | str) -> None:
        """Add a channel (a Channel or its name) to the group; at once, never buffered."""
        self.channel_layer.group_add(self.name, _channel_name(channel))

    def discard(self, channel: Channel | str) -> None:
        """Remove a channel from the group; a channel that is not in it is ignored."""
        self.channel_layer.group_discard(self.name, _channel_name(channel))

    def channels(self) -> list[str]:
        """The names of the group's members (the ASGI ``group_channels`` extension)."""
        return self.channel_layer.group_channels(self.name)

    def send(self, content: dict, immediately: bool = False) -> None:
        """Send ``content`` (a dict) to every channel of the group, now or when the
        running consumer returns."""
        if not isinstance(content, dict):
            raise ValueError(f"only dicts can be sent to a group, got {type(content).__name__}")
        buffer = None if immediately else pending_sends.get(getcurrent())
        if buffer is None:
            self.channel_layer.send_group(self.name, content)
        else:
            _keep(buffer, self.channel_layer, self.name, content, True)


def _channel_name(channel: Channel | str) -> str:
    return channel.name if isinstance(channel, Channel) else channel
