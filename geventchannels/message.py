"""Message: what a consumer receives, its content plus the channels it came from and
replies to."""

from __future__ import annotations

import copy as _copy
from collections.abc import ItemsView, KeysView, ValuesView
from typing import Any

from .channel import Channel
from .layers.base import BaseChannelLayer


class Message:
    """A received message: ``message["text"]``, ``message.reply_channel.send(...)``.

    Built for every message a consumer handles, so construction only stores three
    references; ``channel`` and ``reply_channel`` are made on first use. Decorators add
    attributes such as ``channel_session`` and ``user``.
    """

    def __init__(self, content: dict, channel_name: str, channel_layer: BaseChannelLayer):
        self.content = content
        self.channel_name = channel_name
        self.channel_layer = channel_layer

    @property
    def channel(self) -> Channel:
        channel = self.__dict__.get("_channel")
        if channel is None:
            channel = self._channel = Channel(self.channel_name, channel_layer=self.channel_layer)
        return channel

    @property
    def reply_channel(self) -> Channel | None:
        try:
            return self.__dict__["_reply_channel"]
        except KeyError:
            name = self.content.get("reply_channel")
            channel = None if name is None else Channel(name, channel_layer=self.channel_layer)
            self._reply_channel = channel
            return channel

    def __getitem__(self, key: str) -> Any:
        return self.content[key]

    def __contains__(self, key: object) -> bool:
        return key in self.content

    def get(self, key: str, default: Any = None) -> Any:
        return self.content.get(key, default)

    def keys(self) -> KeysView:
        return self.content.keys()

    def items(self) -> ItemsView:
        return self.content.items()

    def values(self) -> ValuesView:
        return self.content.values()

    def copy(self) -> Message:
        """A new Message with a deep copy of the content (attributes such as sessions
        are not carried over)."""
        return type(self)(_copy.deepcopy(self.content), self.channel_name, self.channel_layer)

    def __repr__(self) -> str:
        return f"<Message on {self.channel_name}>"
