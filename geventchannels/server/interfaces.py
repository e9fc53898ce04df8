"""The shapes the server's modules hand each other, so each can be checked on its own.

``ChannelsHandler`` (handler.py) is the :class:`RequestHandler` that http.py and
websocket.py read a request from; a routed request and a WebSocket connection are the
:class:`Endpoint` objects the application delivers replies to, and a WebSocket connection
is also the :class:`TrackedSocket` the application pings and closes.
"""

from __future__ import annotations

from typing import Any, Protocol


class RequestHeaders(Protocol):
    """A request's headers: case-insensitive lookups, duplicates kept in order."""

    def get(self, name: str, default: Any = None) -> Any: ...

    def get_all(self, name: str, failobj: Any = None) -> Any: ...

    def items(self) -> list[tuple[str, str]]: ...


class RequestHandler(Protocol):
    """The per-socket handler that parsed the request (pywsgi's attribute names)."""

    socket: Any
    client_address: Any
    command: str
    path: str
    request_version: str | None
    headers: RequestHeaders
    environ: dict | None
    wsgi_input: Any
    close_connection: bool


class Endpoint(Protocol):
    """What a reply channel of this process delivers to."""

    def deliver(self, message: dict) -> None: ...


class TrackedSocket(Protocol):
    """An open WebSocket as the application sees it: swept for keepalive, closed on stop."""

    reply_channel: str

    def check_keepalive(self, now: float, interval: float, timeout: float) -> None: ...

    def close(self, code: int = 1000) -> None: ...

    def abort(self) -> None: ...
