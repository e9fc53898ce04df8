from chat.consumers import Chat

channel_routing = [Chat.as_route(path=r"^/chat/$")]
