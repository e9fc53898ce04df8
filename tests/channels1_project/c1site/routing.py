from channels import include, route_class

from chat.bindings import NotesDemultiplexer
from chat.consumers import EchoConsumer

channel_routing = [
    include("chat.routing.room_routing", path=r"^/chat"),
    route_class(EchoConsumer, path=r"^/echo/$"),
    NotesDemultiplexer.as_route(path=r"^/notes/(?P<room>[a-z0-9-]+)/$"),
]
