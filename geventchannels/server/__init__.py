"""The server: HTTP (Django's WSGI fast path or routed ``http.request``) and WebSockets on
greenlets, with the consumer pool, in one gevent process. See docs/server.md.

- :class:`ChannelsApplication` (app.py): the layer side, shared by all connections.
- :class:`ChannelsHandler` / :class:`ChannelsWSGIServer` (handler.py): sockets.
- http.py: routed HTTP; websocket.py (+ handshake.py, writer.py): WebSocket connections;
  frames.py: the RFC 6455 engine over ``websockets``; proxy.py: PROXY_HEADERS;
  responses.py: plain-text answers; sockets.py: plain TCP vs TLS; interfaces.py: types.
"""

from .app import ChannelsApplication
from .config import ServerConfig
from .handler import ChannelsHandler, ChannelsWSGIServer

__all__ = ["ChannelsApplication", "ChannelsHandler", "ChannelsWSGIServer", "ServerConfig"]
