"""The chat's socket: one WebSocket at /chat/ carrying two streams.

- "messages": the MessageBinding (post a message; hear of every new one);
- "online": who is in the room. Each socket is tracked in the presence "chat" with a name
  (``?name=`` in the page's address, else a guest name) and a public id; a newcomer gets
  the whole list, everyone else one join or leave. Leaving needs no consumer: the server
  untracks a socket that closes, for whatever reason, and announces it on "chat.presence".
"""

import secrets
from urllib.parse import parse_qs

from geventchannels.generic.websockets import (
    JsonWebsocketConsumer,
    WebsocketDemultiplexer,
    WebsocketMultiplexer,
)
from geventchannels.presence import Presence

from .bindings import ROOM, MessageBinding

PRESENCE_EVENTS = "chat.presence"
#: Who is in the room. Its events carry reply channel names, which are capabilities (whoever
#: knows one can write to that socket): browsers only ever see the meta below.
people = Presence(ROOM, events=PRESENCE_EVENTS)
NAME_LENGTH = 30


def name_from(message):
    query = parse_qs(message.content.get("query_string", b"").decode("latin-1"))
    name = " ".join((query.get("name") or [""])[0].split())[:NAME_LENGTH]
    return name or "guest-" + secrets.token_hex(2)


class Online(JsonWebsocketConsumer):
    def connect(self, message, **kwargs):
        people.track(
            message.reply_channel, {"id": secrets.token_hex(8), "name": name_from(message)}
        )
        self.send({"members": people.members()})


def presence_event(message):
    """A join or leave of the presence: tell every tab, with the member's public meta."""
    event = message.content
    WebsocketMultiplexer.group_send(ROOM, "online", {event["event"]: event["meta"]})


class Chat(WebsocketDemultiplexer):
    groups = [ROOM]
    consumers = {"messages": MessageBinding.consumer, "online": Online}
