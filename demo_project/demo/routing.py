from chat import consumers
from geventchannels.routing import route

channel_routing = [
    route("websocket.connect", consumers.join, path=r"^/chat/$"),
    route("websocket.receive", consumers.say, path=r"^/chat/$"),
    route("websocket.disconnect", consumers.leave, path=r"^/chat/$"),
]
