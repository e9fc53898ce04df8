"""One socket, three streams: echo, upper-case, and bye (closes with the code asked for)."""

from geventchannels.generic.websockets import JsonWebsocketConsumer, WebsocketDemultiplexer


class Echo(JsonWebsocketConsumer):
    def receive(self, content, **kwargs):
        self.send({"echo": content})


class Upper(JsonWebsocketConsumer):
    def receive(self, content, **kwargs):
        self.send({"upper": content["text"].upper()})


class Bye(JsonWebsocketConsumer):
    def receive(self, content, **kwargs):
        self.close(content["code"])


class Streams(WebsocketDemultiplexer):
    consumers = {"echo": Echo, "upper": Upper, "bye": Bye}


channel_routing = [Streams.as_route(path=r"^/streams/$")]
