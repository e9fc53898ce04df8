"""WebSocket echo (saying which process consumed it and which server process holds the
socket), a group every socket joins, and a task channel for runworker."""

import json
import os

from geventchannels import Channel, Group
from geventchannels.routing import route

GROUP = "everyone"


def ws_connect(message):
    message.reply_channel.send({"accept": True})
    Group(GROUP).add(message.reply_channel)


def ws_receive(message):
    text = message.content.get("text") or ""
    if text.startswith("broadcast:"):
        Group(GROUP).send({"text": text})
    else:
        # The reply channel's process-local prefix names the server process of the socket.
        server = message.reply_channel.name.partition("!")[0]
        reply = {"text": text, "consumer_pid": os.getpid(), "server": server}
        message.reply_channel.send({"text": json.dumps(reply)})


def ws_disconnect(message):
    Group(GROUP).discard(message.reply_channel)


def task(message):
    """Consumed by runworker in the tests: answers on the channel named in the message."""
    Channel(message.content["reply_to"]).send(
        {"pid": os.getpid(), "value": message.content["value"] * 2}
    )


channel_routing = [
    route("websocket.connect", ws_connect),
    route("websocket.receive", ws_receive),
    route("websocket.disconnect", ws_disconnect),
    route("rm.task", task),
    route("rm.other", task),
]
