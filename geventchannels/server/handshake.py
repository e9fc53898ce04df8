"""The parts of a WebSocket's opening handshake that need no connection state: the Host
and Origin policy, the ``websocket.connect`` message, reading a consumer's decision, the
subprotocol, and taking the socket over from pywsgi's reader. The connection
(websocket.py) holds the handshake until a consumer decides; the RFC 6455 checks
themselves are the engine's (frames.py).
"""

from __future__ import annotations

import logging

from django.http.request import split_domain_port, validate_host

from ..logs import Tally
from ..security.websockets import origin_host
from .config import ServerConfig
from .frames import offered_subprotocols
from .http import endpoints, header_list, split_path
from .interfaces import RequestHandler

#: Bytes taken at most from pywsgi's read buffer after the request head.
BUFFERED_LIMIT = 65536
#: Distinct refused origins and hosts logged one by one; beyond, they are only counted.
REFUSALS_LOGGED = 1000

logger = logging.getLogger("geventchannels.server.websocket")


def refusal(handler: RequestHandler, config: ServerConfig) -> str | None:
    """Why the handshake may not go on (answered 403), or None: its Host is not in
    ALLOWED_HOSTS, or its Origin names a foreign site (cross-site WebSocket hijacking: the
    browser sends the site's cookies whatever page opens the socket). A handshake
    without Origin does not come from a web page and is allowed."""
    headers = handler.headers
    host = headers.get("Host") or ""
    if config.use_x_forwarded_host:
        host = headers.get("X-Forwarded-Host") or host
    host_domain, _port = split_domain_port(host)
    if config.websocket_check_host:
        if not (host_domain and validate_host(host_domain, config.allowed_hosts)):
            return _refused(f"Host {host!r} is not in ALLOWED_HOSTS")
    origins = headers.get_all("Origin")
    if not origins:
        return None
    allowed = config.websocket_allowed_origins
    setting = "ALLOWED_HOSTS" if allowed is None else "WEBSOCKET_ALLOWED_ORIGINS"
    if allowed is None:
        allowed = config.allowed_hosts
        if "*" in allowed:
            # ALLOWED_HOSTS = ["*"] says any Host may be served, not that any site's pages
            # may open sockets with this site's cookies: then the Origin must be the Host.
            allowed = [host_domain] if host_domain else []
            setting = "the same-origin rule (ALLOWED_HOSTS is '*')"
    origin = origins[0]
    if len(origins) == 1:
        if origin == "null":
            if "null" in allowed:
                return None
        else:
            domain = origin_host(origin)
            if domain and validate_host(domain, allowed):
                return None
    return _refused(
        f"Origin {', '.join(origins)!r} is not allowed by {setting} (add its host to "
        "WEBSOCKET_ALLOWED_ORIGINS to let its pages connect)"
    )


_refusals_seen: set[str] = set()
_more_refusals = Tally(
    "%d WebSocket handshake(s) answered 403 for origins or hosts not logged before (latest: %s)",
    logger,
)


def _refused(reason: str) -> str:
    """``reason``, logged the first time it is seen (then only counted past
    REFUSALS_LOGGED distinct ones), so that a refused site is named once, not per socket."""
    if reason not in _refusals_seen:
        if len(_refusals_seen) < REFUSALS_LOGGED:
            _refusals_seen.add(reason)
            logger.warning("WebSocket handshake answered 403: %s", reason)
        else:
            _more_refusals.add(reason)
    return reason


def connect_message(handler: RequestHandler, reply_channel: str, config: ServerConfig) -> dict:
    """The ``websocket.connect`` message of the handshake request ``handler`` parsed."""
    scheme, client, server = endpoints(handler, config.proxy_headers, "wss", "ws")
    path, query = split_path(handler.path)
    return {
        "reply_channel": reply_channel,
        "scheme": scheme,
        "path": path,
        "query_string": query,
        "root_path": config.root_path,
        "headers": header_list(handler.headers),
        "client": client,
        "server": server,
        "order": 0,
    }


def is_decision(reply: dict) -> bool:
    """Whether a reply that came before the handshake was answered accepts or rejects."""
    return "accept" in reply or "close" in reply or "text" in reply or "bytes" in reply


def accepts(reply: dict) -> bool:
    if reply.get("accept") is False:
        return False
    if reply.get("accept") or reply.get("text") is not None or reply.get("bytes") is not None:
        return True
    return not reply.get("close")


#: A refusing reply's close code -> the handshake's HTTP status and body: 1013 (try again
#: later: the consumer could not reach the channel layer) 503, 1011 (internal error: the
#: websocket.connect consumer raised) 500; any other refusal 403.
REFUSALS = {
    1011: (500, "WebSocket connection refused: the server failed to handle it.\n"),
    1013: (503, "Service unavailable, try again later.\n"),
}
REFUSED = (403, "WebSocket connection refused.\n")


def refusal_response(reply: dict) -> tuple[int, str]:
    """(status, body) of the HTTP response to a handshake ``reply`` refuses."""
    close = reply.get("close")
    return REFUSALS.get(close, REFUSED) if type(close) is int else REFUSED


def choose_subprotocol(offered: list[str], supported: list[str]) -> str | None:
    """The first of the server's CHANNELS_WS_PROTOCOLS that the client offered."""
    for protocol in supported:
        if protocol in offered:
            return protocol
    return None


def subprotocol(handler: RequestHandler, decision: dict, supported: list[str]) -> str | None:
    """The consumer's ``subprotocol``, else the first supported one the client offered."""
    offered = handler.headers.get_all("Sec-WebSocket-Protocol") or ()
    return decision.get("subprotocol") or choose_subprotocol(
        offered_subprotocols(offered), supported
    )


def take_buffered_input(handler: RequestHandler) -> bytes:
    """Bytes pywsgi's reader buffered past the request (a client that sent frames early),
    and release that reader and the request's parsed state: from now on the connection
    reads the socket directly, and an idle connection keeps none of it."""
    sock = handler.socket
    rfile = handler.__dict__.pop("rfile", None)
    data = b""
    if rfile is not None:
        timeout = sock.timeout
        try:
            sock.settimeout(0.0)
            data = rfile.peek(BUFFERED_LIMIT) or b""
            if data:
                data = rfile.read(len(data))
        except (OSError, ValueError):
            data = b""
        finally:
            sock.settimeout(timeout)
            rfile.close()
    handler.environ = None
    for name in ("wsgi_input", "headers"):  # the class attributes take their place
        handler.__dict__.pop(name, None)
    return data
