"""WebSocket consumers as classes: raw frames, JSON, and several JSON streams on one socket.

::

    class Chat(JsonWebsocketConsumer):
        def connection_groups(self, room, **kwargs):
            return ["room-" + room]

        def receive(self, content, room, **kwargs):
            self.group_send("room-" + room, {"said": content["text"]})

    channel_routing = [Chat.as_route(path=r"^/chat/(?P<room>\\w+)/$")]

A frame a JSON consumer cannot use (not JSON, binary, a multiplexed frame without a known
stream) goes to :meth:`JsonWebsocketConsumer.receive_invalid`, which logs it (one line for a
burst) and drops it: a client that sends garbage never makes the consumer raise.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any, ClassVar

from django.core.serializers.json import DjangoJSONEncoder

from ..channel import Channel, Group
from ..exceptions import SendNotAvailableOnDemultiplexer
from ..logs import Tally
from ..message import Message
from .base import BaseConsumer, Handler

logger = logging.getLogger(__name__)

_invalid_frames = Tally(
    "%d WebSocket frames dropped because their consumer could not use them (latest: %s on %s: %s)",
    logger,
)


def encode_json(content: Any) -> str:
    """JSON text for a client; dates, times, decimals and UUIDs as Django writes them."""
    return json.dumps(content, cls=DjangoJSONEncoder)


def frame(text: str | None = None, bytes: bytes | None = None, close: bool | int = False) -> dict:
    """A reply message for a socket: one of text or bytes, optionally closing after it."""
    if text is not None and bytes is not None:
        raise ValueError("send text or bytes, not both")
    message: dict[str, Any] = {}
    if text is not None:
        message["text"] = text
    elif bytes is not None:
        message["bytes"] = bytes
    elif not close:
        raise ValueError("nothing to send: pass text, bytes or close")
    if close:
        message["close"] = close
    return message


class WebsocketConsumer(BaseConsumer):
    """One socket's life: :meth:`connect`, :meth:`receive` per frame, :meth:`disconnect`.

    The groups :meth:`connection_groups` names are joined before :meth:`connect` and left
    before :meth:`disconnect`, so overriding those two needs no ``super()``.
    """

    method_mapping: ClassVar[dict[str, str]] = {
        "websocket.connect": "raw_connect",
        "websocket.receive": "raw_receive",
        "websocket.disconnect": "raw_disconnect",
    }
    #: Copy the user of the HTTP session into the channel session on connect
    #: (``channel_session_user_from_http``); implies ``channel_session_user``.
    http_user: bool = False
    #: As ``http_user``, and keep ``message.http_session`` too
    #: (``channel_and_http_session_user_from_http``).
    http_user_and_session: bool = False
    #: Handle this socket's messages strictly in the order they were sent
    #: (``enforce_ordering``).
    strict_ordering: bool = False
    #: Groups joined on connect and left on disconnect, unless connection_groups() says else.
    groups: ClassVar[list[str] | tuple[str, ...] | None] = None

    #: The socket's path (the message's ``path``).
    path: str | None = None

    def get_handler(self, message: Message, **kwargs: Any) -> Handler:
        """The raw_* method for the channel, wrapped in the decorators the flags ask for."""
        self.path = message.get("path")
        if self.http_user or self.http_user_and_session:
            self.channel_session_user = True
        handler = super().get_handler(message, **kwargs)
        if self.http_user_and_session:
            from ..auth import channel_and_http_session_user_from_http

            handler = channel_and_http_session_user_from_http(handler)
        elif self.http_user:
            from ..auth import channel_session_user_from_http

            handler = channel_session_user_from_http(handler)
        if self.strict_ordering:
            from ..sessions import enforce_ordering

            handler = enforce_ordering(handler)
        elif getattr(self, "slight_ordering", False):
            raise ValueError(
                "slight_ordering is gone (as in Channels 1.1): messages of one socket are "
                "already handled in order unless ORDERED_DISPATCH is off; remove it, or use "
                "strict_ordering = True"
            )
        return handler

    @property
    def reply_channel(self) -> Channel:
        """The socket's reply channel."""
        channel = self.message.reply_channel
        if channel is None:
            raise ValueError(f"a message on {self.message.channel_name} has no reply_channel")
        return channel

    @property
    def multiplexer(self) -> WebsocketMultiplexer | None:
        """The stream this consumer answers on when a demultiplexer runs it, else None."""
        return self.kwargs.get("multiplexer")

    def connection_groups(self, **kwargs: Any) -> list[str] | tuple[str, ...]:
        """The groups this socket belongs to while it is connected (a list, not a str);
        takes the route's keyword arguments."""
        return self.groups or []

    def _groups(self, **kwargs: Any) -> list[Group]:
        names = self.connection_groups(**kwargs)
        if isinstance(names, str):
            raise TypeError(
                f"{type(self).__qualname__}.connection_groups() returned the str {names!r}; "
                "return a list of group names"
            )
        return [Group(name, channel_layer=self.message.channel_layer) for name in names]

    def raw_connect(self, message: Message, **kwargs: Any) -> None:
        for group in self._groups(**kwargs):
            group.add(self.reply_channel)
        self.connect(message, **kwargs)

    def raw_receive(self, message: Message, **kwargs: Any) -> None:
        if message.get("text") is not None:
            self.receive(text=message["text"], **kwargs)
        else:
            self.receive(bytes=message.get("bytes"), **kwargs)

    def raw_disconnect(self, message: Message, **kwargs: Any) -> None:
        for group in self._groups(**kwargs):
            group.discard(self.reply_channel)
        self.disconnect(message, **kwargs)

    def connect(self, message: Message, **kwargs: Any) -> None:
        """A client opened the socket: accept it (a demultiplexer accepts for its streams)."""
        if self.multiplexer is None:
            self.reply_channel.send({"accept": True})

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        """A frame arrived: ``text`` for a text frame, ``bytes`` for a binary one."""

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        """The socket closed (``message["code"]`` says how)."""

    def send(
        self, text: str | None = None, bytes: bytes | None = None, close: bool | int = False
    ) -> None:
        """Send a frame to this socket, and close it after when ``close`` is set."""
        if self.multiplexer is not None:
            raise SendNotAvailableOnDemultiplexer(
                "a demultiplexed stream carries JSON payloads: use the multiplexer keyword "
                "argument's send(payload), or make this a JsonWebsocketConsumer"
            )
        self.reply_channel.send(frame(text, bytes, close))

    def close(self, status: bool | int = True) -> None:
        """Close this socket: ``True`` for 1000, or a close code (3000-4999)."""
        self.reply_channel.send({"close": status})

    @classmethod
    def group_send(
        cls,
        name: str,
        text: str | None = None,
        bytes: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a frame to every socket of the group ``name``."""
        Group(name).send(frame(text, bytes, close))


class JsonWebsocketConsumer(WebsocketConsumer):
    """A WebsocketConsumer whose frames are JSON text: :meth:`receive` gets the decoded
    value, :meth:`send` encodes one."""

    def raw_receive(self, message: Message, **kwargs: Any) -> None:
        text = message.get("text")
        if text is None:
            self.receive_invalid(message.get("bytes"), "a binary frame, JSON text expected")
            return
        try:
            content = self.decode_json(text)
        except (ValueError, RecursionError) as error:
            self.receive_invalid(text, f"invalid JSON ({error})")
            return
        self.receive(content, **kwargs)

    def receive(self, content: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """A frame arrived, decoded from JSON."""

    def receive_invalid(self, data: Any, reason: str) -> None:
        """A frame this consumer cannot use: logged (a burst as one line) and dropped.
        Override to answer the client or close the socket instead."""
        _invalid_frames.add(type(self).__qualname__, self.path, reason)

    def send(self, content: Any, close: bool | int = False) -> None:  # type: ignore[override]
        """Send ``content`` as JSON (on this consumer's stream when demultiplexed)."""
        multiplexer = self.multiplexer
        if multiplexer is not None:
            multiplexer.send(content, close=close)
        else:
            self.reply_channel.send(frame(self.encode_json(content), close=close))

    @classmethod
    def decode_json(cls, text: str) -> Any:
        return json.loads(text)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return encode_json(content)

    @classmethod
    def group_send(cls, name: str, content: Any, close: bool | int = False) -> None:  # type: ignore[override]
        """Send ``content`` as JSON to every socket of the group ``name``."""
        Group(name).send(frame(cls.encode_json(content), close=close))


class WebsocketMultiplexer:
    """Sends payloads on one stream of a multiplexed socket, in the
    ``{"stream": ..., "payload": ...}`` envelope. A demultiplexer passes one to each of its
    consumers as the ``multiplexer`` keyword argument."""

    def __init__(self, stream: str, reply_channel: Channel) -> None:
        self.stream = stream
        self.reply_channel = reply_channel

    def send(self, payload: Any, close: bool | int = False) -> None:
        """Send ``payload`` on this stream (and close the socket after, if ``close``)."""
        message = self.encode(self.stream, payload)
        if close:
            message["close"] = close
        self.reply_channel.send(message)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return encode_json(content)

    @classmethod
    def encode(cls, stream: str, payload: Any) -> dict:
        """The reply message that carries ``payload`` on ``stream``."""
        return {"text": cls.encode_json({"stream": stream, "payload": payload})}

    @classmethod
    def group_send(cls, name: str, stream: str, payload: Any, close: bool | int = False) -> None:
        """Send ``payload`` on ``stream`` to every socket of the group ``name``."""
        message = cls.encode(stream, payload)
        if close:
            message["close"] = close
        Group(name).send(message)


class WebsocketDemultiplexer(JsonWebsocketConsumer):
    """Several consumers on one socket, one per stream: a frame
    ``{"stream": "items", "payload": {...}}`` goes to ``consumers["items"]``, which sees a
    message whose ``text`` is the payload's JSON, and answers with the ``multiplexer``
    keyword argument (or ``self.send`` in a JsonWebsocketConsumer). Connects and
    disconnects go to every consumer. The socket is accepted after every consumer has seen
    the connect, so one of them can still refuse it (``DenyConnection``)."""

    #: stream name -> consumer (a function, a consumer class, a Binding's ``consumer``).
    consumers: ClassVar[dict[str, Any]] = {}
    multiplexer_class: ClassVar[type[WebsocketMultiplexer]] = WebsocketMultiplexer

    def _forward(self, message: Message, stream: str, consumer: Any, kwargs: dict) -> None:
        multiplexer = self.multiplexer_class(stream, self.reply_channel)
        consumer(message, **dict(kwargs, multiplexer=multiplexer))

    def connect(self, message: Message, **kwargs: Any) -> None:
        for stream, consumer in self.consumers.items():
            self._forward(message, stream, consumer, kwargs)
        self.reply_channel.send({"accept": True})

    def receive(self, content: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if not isinstance(content, dict) or "stream" not in content or "payload" not in content:
            self.receive_invalid(content, 'not a {"stream": ..., "payload": ...} object')
            return
        stream = content["stream"]
        consumer = self.consumers.get(stream) if isinstance(stream, str) else None
        if consumer is None:
            self.receive_invalid(content, f"no consumer for stream {stream!r}")
            return
        inner = copy.copy(self.message)
        inner.content = dict(self.message.content, text=self.encode_json(content["payload"]))
        self._forward(inner, stream, consumer, kwargs)

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        for stream, consumer in self.consumers.items():
            self._forward(message, stream, consumer, kwargs)

    def send(self, *args: Any, **kwargs: Any) -> None:
        raise SendNotAvailableOnDemultiplexer(
            "a demultiplexer has no stream of its own: send with the multiplexer keyword "
            "argument its consumers get, or WebsocketMultiplexer(stream, reply_channel)"
        )

    @classmethod
    def group_send(cls, *args: Any, **kwargs: Any) -> None:
        raise SendNotAvailableOnDemultiplexer(
            "a demultiplexer has no stream of its own: use "
            "WebsocketMultiplexer.group_send(name, stream, payload)"
        )
