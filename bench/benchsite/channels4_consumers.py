"""Channels 4 consumers for the anchors: the idiomatic way to write each workload there.

Echo is a sync WebsocketConsumer (the model geventchannels offers); broadcast and long-poll
use async consumers, Channels 4's fastest path for group fan-out.
"""

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer

TEXT = [(b"content-type", b"text/plain")]


class Echo(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data, bytes_data=bytes_data)


class EchoUser(WebsocketConsumer):
    """Behind AuthMiddlewareStack: the user is resolved once, on connect."""

    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=self.scope["user"].username)


class Member(AsyncWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add("bench", self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard("bench", self.channel_name)

    async def bench_message(self, event):
        await self.send(text_data=event["text"])


class Sender(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send("bench", {"type": "bench.message", "text": text_data})


class Idle(AsyncWebsocketConsumer):
    pass


class Park(AsyncHttpConsumer):
    """Stays open after the request; the group message answers it."""

    async def http_request(self, message):
        await self.channel_layer.group_add("poll", self.channel_name)

    async def poll_fire(self, event):
        await self.send_response(200, b"fired", headers=TEXT)
        await self.channel_layer.group_discard("poll", self.channel_name)
        raise StopConsumer()


class PollCount(AsyncHttpConsumer):
    async def handle(self, body):
        count = len(getattr(self.channel_layer, "groups", {}).get("poll", {}))
        await self.send_response(200, b"%d" % count, headers=TEXT)


class Fire(AsyncHttpConsumer):
    async def handle(self, body):
        await self.channel_layer.group_send("poll", {"type": "poll.fire"})
        await self.send_response(200, b"ok", headers=TEXT)
