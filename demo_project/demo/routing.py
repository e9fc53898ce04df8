from chat.consumers import PRESENCE_EVENTS, Chat, presence_event
from geventchannels.routing import route

channel_routing = [
    Chat.as_route(path=r"^/chat/$"),
    route(PRESENCE_EVENTS, presence_event),
]
