"""HTTP through channels: ASGI 1.0 request messages and the routed-request bridge.

Most requests never come here: the handler sends a request to Django's WSGI handler
directly (the fast path) unless an ``http.request`` route of the project claims it. A
claimed request is sent as an ``http.request`` message and its greenlet parks until the
response arrives on its reply channel, possibly much later (long-poll). A parked request
costs its greenlet, one timeout and one read watcher that notices the client leaving.

A consumer that fails is answered at once, not at HTTP_TIMEOUT: the consumer pool sends
``{"close": 1013}`` (it could not reach the channel layer) or ``{"close": 1011}`` (it
raised) to the reply channel, as to a WebSocket (consuming.py); before the response has
started that is 503 / 500 (FAILURES), after it the connection is cut.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote
from weakref import WeakKeyDictionary

from gevent import get_hub
from gevent.event import Event

from ..exceptions import ChannelLayerUnavailable, MessageTooLarge
from ..logs import Tally
from .interfaces import RequestHandler
from .proxy import forwarded
from .responses import plain_text, status_line
from .sockets import is_tls, os_socket

if TYPE_CHECKING:
    from .app import ChannelsApplication

logger = logging.getLogger("geventchannels.server")

#: Seconds a routed request waits for room in a full http.request channel before its 503.
REQUEST_PATIENCE = 1.0

_request_refused = Tally(
    "%d routed HTTP request(s) answered 503: the http.request channel stayed full for %s s "
    "(latest: %s). Run more consumers or raise that channel's capacity.",
    logger,
)
_request_unavailable = Tally(
    "%d routed HTTP request(s) answered 503: http.request could not be sent (latest: %s)",
    logger,
)

#: A ``close`` reply's code -> (status, body) of the response: what the consumer pool
#: sends when the request's consumer could not reach the channel layer (1013) or raised
#: (1011, and any other code).
FAILURES = {
    1011: (500, "Internal server error: the server failed to handle the request.\n"),
    1013: (503, "Service unavailable, try again later.\n"),
}


# -- message building (shared with the WebSocket code) -------------------------


def split_path(raw_path: str) -> tuple[str, bytes]:
    """Request target -> (unquoted UTF-8 path, raw query string bytes)."""
    path, _, query = raw_path.partition("?")
    return unquote(path, errors="replace"), query.encode("latin-1")


def header_list(headers: Any) -> list[list[bytes]]:
    """pywsgi's parsed headers as ASGI ``[[name_lower_bytes, value_bytes], ...]``,
    duplicates kept in order."""
    return [
        [name.lower().encode("latin-1"), value.encode("latin-1", "replace")]
        for name, value in headers.items()
    ]


def endpoints(
    handler: RequestHandler, proxy_headers: bool, secure_scheme: str, plain_scheme: str
) -> tuple[str, list | None, list | None]:
    """(scheme, client [host, port], server [host, port]) of a request; with
    ``proxy_headers``, what the proxy says (proxy.py) is believed."""
    environ = handler.environ or {}
    scheme = secure_scheme if environ.get("wsgi.url_scheme") == "https" else plain_scheme
    address = handler.client_address
    client = [str(address[0]), int(address[1])] if isinstance(address, tuple) else None
    try:
        local = handler.socket.getsockname()
        server = [str(local[0]), int(local[1])] if isinstance(local, tuple) else None
    except (OSError, AttributeError):
        server = None
    if proxy_headers:
        forwarded_client, secure = forwarded(handler.headers)
        if forwarded_client is not None:
            client = list(forwarded_client)
        if secure is not None:
            scheme = secure_scheme if secure else plain_scheme
    return scheme, client, server


def _version(handler: RequestHandler) -> str:
    version = handler.request_version or "HTTP/1.1"
    return version[5:] if version.startswith("HTTP/") else version


def request_message(handler: RequestHandler, app: ChannelsApplication) -> dict:
    """The ``http.request`` message of the request ``handler`` has parsed, without
    ``reply_channel`` and ``body`` (added once a route claims it)."""
    path, query = split_path(handler.path)
    scheme, client, server = endpoints(handler, app.config.proxy_headers, "https", "http")
    return {
        "http_version": _version(handler),
        "method": handler.command,
        "scheme": scheme,
        "path": path,
        "query_string": query,
        "root_path": app.config.root_path,
        "headers": header_list(handler.headers),
        "client": client,
        "server": server,
    }


#: Message keys that cost next to nothing to compute, for the routing check.
_CHEAP_KEYS: dict[str, Callable[[Any, ChannelsApplication], Any]] = {
    "path": lambda handler, app: split_path(handler.path)[0],
    "query_string": lambda handler, app: split_path(handler.path)[1],
    "method": lambda handler, app: handler.command,
    "http_version": lambda handler, app: _version(handler),
    "root_path": lambda handler, app: app.config.root_path,
}
#: Answers of claiming_route() per request line, while the routes only read cheap keys.
CLAIM_CACHE_SIZE = 4096
CLAIM_CACHE_PATH = 512


class _ClaimCheck:
    """What the http.request routes of one Router read, and their answers so far."""

    __slots__ = ("channels", "keys", "answers")

    def __init__(self, router: Any):
        #: The router's channel set when this was built (add_route replaces it).
        self.channels = router.channels
        keys = router.filter_keys("http.request")
        #: None when some route reads a key that needs the whole message.
        self.keys = tuple(keys) if keys <= _CHEAP_KEYS.keys() else None
        self.answers: dict[tuple, bool] = {}


_claim_checks: WeakKeyDictionary = WeakKeyDictionary()


def claiming_route(handler: RequestHandler, app: ChannelsApplication) -> bool:
    """Whether an ``http.request`` route claims the request. Routes usually filter on the
    path only: then the answer depends on the request line alone and is remembered."""
    router = app.router
    check = _claim_checks.get(router)
    if check is None or check.channels is not router.channels:
        check = _claim_checks[router] = _ClaimCheck(router)
    if check.keys is None:
        return router.match_content("http.request", request_message(handler, app)) is not None
    line = (handler.path, handler.command, handler.request_version, app.config.root_path)
    answer = check.answers.get(line)
    if answer is None:
        probe = {key: _CHEAP_KEYS[key](handler, app) for key in check.keys}
        answer = router.match_content("http.request", probe) is not None
        if len(handler.path) <= CLAIM_CACHE_PATH:
            if len(check.answers) >= CLAIM_CACHE_SIZE:
                check.answers.clear()
            check.answers[line] = answer
    return answer


# -- the routed request ----------------------------------------------------------

StartResponse = Callable[..., Any]


def _plain(start_response: StartResponse, status: int, text: str) -> list[bytes]:
    line, headers, body = plain_text(status, text)
    start_response(line, headers)
    return [body]


class RoutedRequest:
    """One request answered through the ``http.request`` channel."""

    __slots__ = (
        "app",
        "handler",
        "message",
        "reply_channel",
        "replies",
        "arrived",
        "watcher",
        "client_gone",
        "finished",
    )

    def __init__(self, app: ChannelsApplication, handler: RequestHandler, message: dict):
        self.app = app
        self.handler = handler
        self.message: dict | None = message
        self.reply_channel = ""
        self.replies: deque[dict] = deque()
        self.arrived = Event()
        self.watcher: Any = None
        self.client_gone = False
        self.finished = False

    # Called by the application's local delivery, in the sender's greenlet.
    def deliver(self, message: dict) -> None:
        self.replies.append(message)
        self.arrived.set()

    def respond(self, start_response: StartResponse) -> Any:
        """Run the request: read the body, send it, wait for the response. Returns the
        WSGI result (a list when the response came whole, else an iterable of chunks)."""
        body = self._read_body()
        if body is None:
            limit = self.app.config.max_body_size
            return _plain(
                start_response,
                413,
                f"Request body is larger than {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE).\n",
            )
        app = self.app
        self.reply_channel = app.register_endpoint(self, "http")
        message = self.message
        assert message is not None  # until it is sent
        message["reply_channel"] = self.reply_channel
        message["body"] = body
        try:
            sent = app.send_when_room(
                "http.request", message, min(REQUEST_PATIENCE, app.config.http_timeout)
            )
        except MessageTooLarge:
            self._close()
            return _plain(start_response, 413, "Request is too large for the channel layer.\n")
        except ChannelLayerUnavailable as error:
            self._close()
            _request_unavailable.add(error)
            return _plain(start_response, *FAILURES[1013])
        except Exception:
            self._close()
            raise
        if not sent:
            self._close()
            _request_refused.add(REQUEST_PATIENCE, message["path"])
            return _plain(start_response, 503, "Server busy: the http.request channel is full.\n")
        self.message = None
        self._watch_client()
        try:
            first = self._next_reply(app.config.http_timeout)
        except BaseException:  # the server is stopping and kills this greenlet
            self._close()
            raise
        if first is None:
            self._close()
            if self.client_gone:
                self._send_disconnect()
                return _plain(start_response, 503, "The client went away.\n")
            return _plain(
                start_response, 503, f"No response within {app.config.http_timeout} seconds.\n"
            )
        if "close" in first:
            self._close()
            code = first["close"] if type(first["close"]) is int else 1011
            return _plain(start_response, *FAILURES.get(code, FAILURES[1011]))
        try:
            status = int(first.get("status", 200))
            headers = [(_text(name), _text(value)) for name, value in first.get("headers") or ()]
            start_response(status_line(status), headers)
        except Exception:
            self._close()
            logger.exception(
                "invalid http.response on %s: %r",
                self.reply_channel,
                {k: v for k, v in first.items() if k != "content"},
            )
            raise
        content = first.get("content") or b""
        if not first.get("more_content"):
            self._close()
            return [content]
        return _Streamed(self, self._stream(content))

    def _stream(self, content: bytes) -> Generator[bytes]:
        try:
            yield content
            while True:
                chunk = self._next_reply(self.app.config.http_timeout)
                if chunk is None:
                    if self.client_gone:
                        self._send_disconnect()
                    else:
                        logger.warning(
                            "response on %s stalled for %s seconds; closing it",
                            self.reply_channel,
                            self.app.config.http_timeout,
                        )
                        self._abort()
                    return
                if "close" in chunk:  # its consumer failed: the pool logged why
                    self._abort()
                    return
                yield chunk.get("content") or b""
                if not chunk.get("more_content"):
                    return
        except GeneratorExit:
            if not self.finished:
                self.client_gone = True
                self._send_disconnect()
            raise
        finally:
            self._close()

    def _read_body(self) -> bytes | None:
        """The whole body, or None when it is larger than Django would accept."""
        limit = self.app.config.max_body_size
        stream = self.handler.wsgi_input
        length = self.handler.headers.get("Content-Length")
        if limit is not None and length and length.strip().isdigit() and int(length) > limit:
            self.handler.close_connection = True
            return None
        if limit is None:
            return stream.read()
        body = stream.read(limit + 1)
        if len(body) > limit:
            self.handler.close_connection = True
            return None
        return body

    def _next_reply(self, timeout: float) -> dict | None:
        replies = self.replies
        while not replies:
            if self.client_gone:
                return None
            self.arrived.clear()
            if not self.arrived.wait(timeout):
                return None
        return replies.popleft()

    def _watch_client(self) -> None:
        """Notice the client closing its socket while the request is parked."""
        sock = self.handler.socket
        raw = os_socket(sock)
        if raw is not None:
            callback: Callable[[], bool | None] = partial(_peer_closed, raw)
        elif is_tls(sock):
            callback = self._tls_peer_closed
        else:
            return
        try:
            watcher = get_hub().loop.io(sock.fileno(), 1)
        except Exception:
            return
        self.watcher = watcher
        watcher.start(self._on_readable, callback)

    def _on_readable(self, peer_closed: Callable[[], bool | None]) -> None:
        gone = peer_closed()
        if gone is None:
            return
        self._stop_watching()
        if gone:
            self.client_gone = True
            self.arrived.set()

    def _tls_peer_closed(self) -> bool | None:
        """Over TLS the bytes on the socket are records: whether the client closed (its
        close_notify, or the end of the stream) only shows by reading through TLS. Data
        read that way is lost to the next request, so the connection is not reused."""
        sock = self.handler.socket
        timeout = sock.timeout
        sock.settimeout(0.0)
        try:
            data = sock.recv(1)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except (OSError, ValueError):
            return True
        finally:
            sock.settimeout(timeout)
        if data:
            self.handler.close_connection = True
            return False
        return True

    def _stop_watching(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()

    def _abort(self) -> None:
        """End the connection without the final chunk, so the client sees the response
        is incomplete instead of taking the part it got for the whole."""
        self.handler.close_connection = True
        try:
            self.handler.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_disconnect(self) -> None:
        try:
            self.app.send_now(
                "http.disconnect",
                {"reply_channel": self.reply_channel, "path": self.handler_path()},
            )
        except Exception as error:
            logger.warning("http.disconnect for %s not sent: %s", self.reply_channel, error)
        self.handler.close_connection = True

    def handler_path(self) -> str:
        return split_path(self.handler.path or "/")[0]

    def _close(self) -> None:
        if not self.finished:
            self.finished = True
            self._stop_watching()
            self.app.unregister_endpoint(self.reply_channel)


class _Streamed:
    """The WSGI result of a streamed response; ``close()`` releases the reply channel
    even when the server never started iterating (the client left first)."""

    __slots__ = ("request", "chunks")

    def __init__(self, request: RoutedRequest, chunks: Generator[bytes]):
        self.request = request
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        self.chunks.close()
        self.request._close()


def _peer_closed(raw: socket.socket) -> bool | None:
    """Whether a plain socket that polled readable was closed by the client (a peek: any
    data stays for the next request); None when nothing is there after all."""
    try:
        return raw.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return None
    except OSError:
        return True


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)
