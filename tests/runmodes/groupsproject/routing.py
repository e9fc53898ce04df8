"""Join the room on connect and tell the socket its reply channel; "broadcast:..." goes to
the whole room."""

import json
from urllib.parse import parse_qs

from geventchannels import Group
from geventchannels.presence import Presence
from geventchannels.routing import route

ROOM = "room"
presence = Presence(ROOM, events="room.events")


def ws_connect(message):
    message.reply_channel.send({"accept": True})
    Group(ROOM).add(message.reply_channel)
    query = parse_qs(message.content["query_string"].decode())
    presence.track(message.reply_channel, {"user": query.get("user", ["?"])[0]})
    message.reply_channel.send({"text": json.dumps({"channel": message.reply_channel.name})})


def ws_receive(message):
    text = message.content.get("text") or ""
    if text.startswith("broadcast:"):
        Group(ROOM).send({"text": text})


channel_routing = [route("websocket.connect", ws_connect), route("websocket.receive", ws_receive)]
