"""The chat's consumers: plain functions of a message, as in Channels 1.x."""

import json

from geventchannels import Group

ROOM = Group("chat")


def join(message):
    ROOM.add(message.reply_channel)
    message.reply_channel.send({"accept": True})


def say(message):
    text = message.get("text") or ""
    if text.strip():
        ROOM.send({"text": json.dumps({"text": text[:2000]})})


def leave(message):
    ROOM.discard(message.reply_channel)
