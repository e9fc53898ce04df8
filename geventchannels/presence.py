"""Presence: who is in a room right now, across every process, with join and leave events.

::

    from geventchannels.presence import Presence

    room = Presence("room-1", events="room.events")

    def ws_connect(message):
        message.reply_channel.send({"accept": True})
        room.track(message.reply_channel, {"user": message.user.username})

    def room_event(message):            # routed on "room.events"
        ...                             # {"presence": "room-1", "event": "join", ...}

``members()`` lists the meta dicts of the live members. A tracked socket that closes, for
any reason, is untracked by the server (a leave event), and so are the sockets of a process
that died (on Redis, through its lease): no ``websocket.disconnect`` consumer is needed.
The events go to ``events`` as one message per join or leave; no list is ever re-sent.
"""

from __future__ import annotations

from typing import Any

from . import DEFAULT_CHANNEL_LAYER
from .channel import Channel, _channel_name, _layer_for
from .exceptions import MessageTooLarge
from .layers.base import BaseChannelLayer, copy_message
from .layers.membership import MAX_META_SIZE, Memberships

__all__ = ["Presence"]


class Presence:
    """The live members of presence ``name`` (a group name: letters, digits, ``-_.``).

    ``events``, a channel name or a :class:`~geventchannels.channel.Channel`, gets
    ``{"presence": name, "event": "join" | "leave", "channel": <member>, "meta": {...}}``
    for each join and leave; without it nothing is announced. A leave goes to the
    ``events`` of the Presence that tracked the member.
    """

    __slots__ = ("name", "events", "alias", "_layer")

    def __init__(
        self,
        name: str,
        events: Channel | str | None = None,
        alias: str = DEFAULT_CHANNEL_LAYER,
        channel_layer: BaseChannelLayer | None = None,
    ):
        self.name = name
        self.events = _channel_name(events) if events is not None else ""
        self.alias = alias
        self._layer = channel_layer

    @property
    def channel_layer(self) -> BaseChannelLayer:
        """The layer, looked up at each use (unless one was given), so that a Presence made
        at import time follows the layer the project runs with."""
        return _layer_for(self.alias, self._layer)

    def _memberships(self) -> Memberships:
        layer = self.channel_layer
        layer.valid_group_name(self.name)
        if self.events:
            layer.valid_channel_name(self.events)
        return layer.memberships

    def track(self, channel: Channel | str, meta: dict[str, Any] | None = None) -> None:
        """Make ``channel`` a member with ``meta`` (a small dict, at most 4 KiB as a
        message counts it), announcing the join. Tracking a member again replaces its
        meta, without an event."""
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise TypeError(f"presence meta must be a dict, got {type(meta).__name__}")
        memberships = self._memberships()
        name = _channel_name(channel)
        memberships.layer.valid_channel_name(name)
        try:
            meta = copy_message(meta, MAX_META_SIZE)
        except MessageTooLarge:
            raise MessageTooLarge(
                f"presence meta is larger than {MAX_META_SIZE} bytes: keep it to what a "
                "member list shows (a name, an id)"
            ) from None
        if memberships.track(self.name, name, meta, self.events):
            memberships.announce(self.name, "join", name, meta, self.events)

    def untrack(self, channel: Channel | str) -> None:
        """Take ``channel`` out, announcing the leave; a channel that is not a member is
        ignored."""
        memberships = self._memberships()
        name = _channel_name(channel)
        memberships.layer.valid_channel_name(name)
        memberships.untrack(self.name, name)

    def members(self) -> list[dict[str, Any]]:
        """The meta dicts of the live members, in the order they joined, from every
        process that shares the layer."""
        return self._memberships().members(self.name)

    def __repr__(self) -> str:
        return f"<Presence {self.name}>"
