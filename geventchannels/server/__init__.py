"""The server: HTTP (Django's WSGI fast path or routed ``http.request``) and WebSockets on
greenlets, with the consumer pool, in one gevent process. See docs/server.md.

- :class:`ChannelsApplication` (app.py): the layer side, shared by all connections.
- :class:`ChannelsHandler` / :class:`ChannelsWSGIServer` (handler.py): sockets.
- http.py: routed HTTP; websocket.py: WebSocket connections; wsproto_engine.py: RFC 6455.
"""

from .app import ChannelsApplication
from .config import ServerConfig
from .handler import ChannelsHandler, ChannelsWSGIServer

__all__ = ["ChannelsApplication", "ChannelsHandler", "ChannelsWSGIServer", "ServerConfig"]
