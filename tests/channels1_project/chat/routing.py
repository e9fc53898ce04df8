from channels import route

room = r"^/(?P<room>[a-z0-9-]+)/$"

room_routing = [
    route("websocket.connect", "chat.consumers.ws_connect", path=room),
    route("websocket.receive", "chat.consumers.ws_message", path=room),
    route("websocket.disconnect", "chat.consumers.ws_disconnect", path=room),
]
