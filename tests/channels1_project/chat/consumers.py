"""Consumers as Channels 1.x wrote them: functions with the session decorators, and a
generic JSON consumer."""

import json

from channels import Group
from channels.auth import channel_session_user, channel_session_user_from_http
from channels.generic.websockets import JsonWebsocketConsumer
from channels.security.websockets import allowed_hosts_only


def room_group(room):
    return Group("room-" + room)


@allowed_hosts_only
@channel_session_user_from_http
def ws_connect(message, room):
    message.reply_channel.send({"accept": True})
    message.channel_session["room"] = room
    room_group(room).add(message.reply_channel)
    room_group(room).send({"text": json.dumps({"joined": message.user.username})})


@channel_session_user
def ws_message(message, room):
    said = {"user": message.user.username, "text": message["text"]}
    room_group(message.channel_session["room"]).send({"text": json.dumps(said)})


@channel_session_user
def ws_disconnect(message, room):
    room_group(message.channel_session["room"]).discard(message.reply_channel)


class EchoConsumer(JsonWebsocketConsumer):
    http_user = True

    def connection_groups(self, **kwargs):
        return ["echoes"]

    def receive(self, content, **kwargs):
        self.send({"echo": content, "user": self.message.user.username})
