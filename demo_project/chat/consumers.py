"""The chat's socket: one WebSocket at /chat/ carrying two streams.

- "messages": the MessageBinding (post a message; hear of every new one);
- "online": how many tabs are open, sent to all of them when one opens or closes.
"""

from geventchannels.generic.websockets import (
    JsonWebsocketConsumer,
    WebsocketDemultiplexer,
    WebsocketMultiplexer,
)

from .bindings import ROOM, MessageBinding


class Online(JsonWebsocketConsumer):
    def connect(self, message, **kwargs):
        self.announce()

    def disconnect(self, message, **kwargs):
        self.announce()

    def announce(self):
        online = len(self.message.channel_layer.group_channels(ROOM))
        WebsocketMultiplexer.group_send(ROOM, "online", {"online": online})


class Chat(WebsocketDemultiplexer):
    groups = [ROOM]
    consumers = {"messages": MessageBinding.consumer, "online": Online}
