"""Sessions for consumers: a session per socket (``channel_session``), the browser's session
(``http_session``), and strict ordering of a socket's messages (``enforce_ordering``).

A channel session is a Django session whose key is derived from the reply channel, so every
consumer of one socket's messages finds the same session. It is created when first saved,
saved after the consumer returns when it was modified, and deleted after the socket's
``websocket.disconnect`` consumer has run.

Speed: on a layer that does not cross processes (in-memory), only this process ever sees a
socket's messages, so the session is loaded once and kept here for the socket's life
(:class:`ChannelSessionCache`), written through when it changes. On a layer that crosses
processes (Redis) another process may consume the same socket's next message and change
the session; nothing cheap could tell this process that its copy went stale, so there every
message loads the session from its store, as in Channels 1.x (``cache`` or ``cached_db``
sessions make that load a cache read).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from importlib import import_module
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import parse_qs

import gevent
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.http.cookie import parse_cookie
from gevent import getcurrent

from . import logs
from .channel import pending_sends
from .exceptions import ChannelFull, ChannelSocketException, ConsumeLater, DenyConnection
from .message import Message

logger = logging.getLogger(__name__)

Consumer = TypeVar("Consumer", bound=Callable[..., Any])

#: Channel session keys: this prefix and 29 hex digits of the reply channel's SHA-1
#: (32 characters, as in Channels 1.x, so both find the same sessions).
CHANNEL_SESSION_PREFIX = "chn"
#: Where enforce_ordering keeps the ``order`` of the socket's next message (Channels 1.x's key).
NEXT_ORDER_KEY = "__channels_next_order"
#: Sockets whose channel session this process keeps in memory at most (least recently
#: used first out; an evicted socket's next message loads its session again).
CACHE_SIZE = 10_000
#: Attempts (with a growing pause) to put a parked message back on a full channel.
REQUEUE_ATTEMPTS = 10

_SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"


def session_key_for(reply_channel: str) -> str:
    """The channel session key of a reply channel (a hash: the name itself is a secret)."""
    digest = hashlib.sha1(reply_channel.encode("utf-8")).hexdigest()
    return CHANNEL_SESSION_PREFIX + digest[:29]


def channel_session_engine() -> ModuleType:
    """The session engine of channel sessions: ``CHANNEL_SESSION_ENGINE``, else
    ``SESSION_ENGINE``; the signed-cookie engine is refused."""
    return _engine(getattr(settings, "CHANNEL_SESSION_ENGINE", None) or settings.SESSION_ENGINE)


@functools.lru_cache(maxsize=8)
def _engine(path: str) -> ModuleType:
    engine = import_module(path)
    signed = import_module(_SIGNED_COOKIES)
    if engine is signed or issubclass(engine.SessionStore, signed.SessionStore):
        raise ImproperlyConfigured(
            "channel sessions cannot use the signed-cookie session engine (%s): its data "
            "lives in the browser's cookie, and a socket has no cookie to write to. Set "
            "CHANNEL_SESSION_ENGINE to a server-side engine, e.g. "
            "'django.contrib.sessions.backends.cache' or '...cached_db'." % path
        )
    return engine


def http_session_engine() -> ModuleType:
    return import_module(settings.SESSION_ENGINE)


# -- the channel session of a socket ---------------------------------------------------


class ChannelSessionCache:
    """The channel sessions of this process's sockets, by reply channel: at most ``size``,
    least recently used dropped first. Used only on layers that do not cross processes."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[str, SessionBase] = OrderedDict()

    def get(self, reply_channel: str) -> SessionBase | None:
        session = self._entries.get(reply_channel)
        if session is not None:
            self._entries.move_to_end(reply_channel)
        return session

    def put(self, reply_channel: str, session: SessionBase) -> None:
        self._entries[reply_channel] = session
        self._entries.move_to_end(reply_channel)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, reply_channel: str) -> None:
        self._entries.pop(reply_channel, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


#: This process's cache of channel sessions.
cache = ChannelSessionCache()
#: Whether a consumer of this process was decorated with channel_session.
_decorated = False


def cache_for(layer: Any) -> ChannelSessionCache | None:
    """The cache when the layer's messages stay in this process, else None."""
    return None if getattr(layer, "crosses_processes", True) else cache


def session_for_reply_channel(reply_channel: str) -> SessionBase:
    """The channel session of ``reply_channel`` loaded from its store (empty when it does
    not exist yet); ``stored`` on it says whether it did."""
    key = session_key_for(reply_channel)
    session = channel_session_engine().SessionStore(session_key=key)
    session.keys()  # load now; the engines forget the key of a session they did not find
    session.stored = session.session_key is not None
    session._session_key = key
    return session


def save_channel_session(session: SessionBase) -> None:
    """Write a channel session to its store, creating it when it is not there (yet, or
    any more: expired, or deleted under us)."""
    stored = getattr(session, "stored", False)
    try:
        session.save(must_create=not stored)
    except CreateError:
        session.save()
    except UpdateError:
        session.save(must_create=True)
    session.stored = True  # type: ignore[attr-defined]
    session.modified = False


#: Deletions that failed: a session store that is down fails every closing socket.
_failed_deletes = logs.Tally(
    "could not delete the channel sessions of %d more closed sockets (latest: %s, %s)", logger
)


def delete_channel_session(reply_channel: str) -> None:
    """Remove a socket's channel session from its store and from this process's cache.
    A failure is logged, the first with its traceback, later ones counted."""
    cache.drop(reply_channel)
    try:
        channel_session_engine().SessionStore().delete(session_key_for(reply_channel))
    except Exception as error:
        first = _failed_deletes.reporter is None
        if first:
            logger.error(
                "could not delete the channel session of %s", reply_channel, exc_info=error
            )
        _failed_deletes.add(reply_channel, repr(error)[:200], logged=first)


def socket_closed(message: Message) -> None:
    """For the consumer pool, after the consumer of a ``websocket.disconnect`` returned or
    raised (not ConsumeLater): the socket's channel session is deleted, even when that
    consumer was not decorated. Nothing is done when this process never decorated a
    consumer, or when enforce_ordering parked the message for later."""
    reply = message.content.get("reply_channel")
    done = "_channel_session_deleted" in message.__dict__ or _parked(message)
    if _decorated and type(reply) is str and not done:
        delete_channel_session(reply)


def find_message(args: tuple) -> Message:
    """The Message among a consumer's first two arguments (a function's, or a method's
    after ``self``)."""
    if args and isinstance(args[0], Message):
        return args[0]
    if len(args) > 1 and isinstance(args[1], Message):
        return args[1]
    raise ValueError(
        "a session decorator was applied to a consumer called without a Message as its "
        "first argument (or second, after self)"
    )


def channel_session(func: Consumer) -> Consumer:
    """``message.channel_session``: a Django session for the socket, kept across its
    messages. Saved after the consumer returns, when modified; nested decorators share
    one load and one save."""
    return with_channel_session(func)


def with_channel_session(
    func: Consumer, prepare: Callable[[Message], None] | None = None
) -> Consumer:
    """``channel_session``, and ``prepare(message)`` once the session is on the message,
    before ``func``, inside the same load and save: a decorator built on channel_session
    adds no wrapper of its own (it runs on every frame)."""

    global _decorated
    _decorated = True

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args)
        if "channel_session" in message.__dict__:
            if prepare is not None:
                prepare(message)
            return func(*args, **kwargs)
        return _run_with_channel_session(message, func, args, kwargs, prepare)

    return inner  # type: ignore[return-value]


def _run_with_channel_session(
    message: Message,
    func: Callable,
    args: tuple,
    kwargs: dict,
    prepare: Callable[[Message], None] | None,
) -> Any:
    reply = message.content.get("reply_channel")
    if not reply or type(reply) is not str:
        raise ValueError(
            "@channel_session needs a message with a reply_channel (a socket's messages "
            "have one); the message on %s has none" % message.channel_name
        )
    cached = cache_for(message.channel_layer)
    session = cached.get(reply) if cached is not None else None
    if session is None:
        session = session_for_reply_channel(reply)
        if cached is not None:
            # Another message of the socket may have loaded it while this one waited for
            # the store: every consumer of the socket must share one copy.
            session = cached.get(reply) or session
            cached.put(reply, session)
    message.channel_session = session  # type: ignore[attr-defined]
    succeeded = refused = False
    try:
        if prepare is not None:
            prepare(message)
        result = func(*args, **kwargs)
        succeeded = True
        return result
    except ChannelSocketException:
        succeeded = True  # the pool sends what the consumer buffered, then acts on the socket
        raise
    except DenyConnection:
        refused = True
        raise
    finally:
        channel = message.channel_name
        if (channel == "websocket.disconnect" and not _parked(message)) or (
            channel == "websocket.connect" and (refused or _refused_in_buffer(reply))
        ):
            # The socket is gone (or never opens): so is its session.
            delete_channel_session(reply)
            message.__dict__["_channel_session_deleted"] = True
        elif session.modified:
            if succeeded:
                try:
                    save_channel_session(session)
                except BaseException:
                    cache.drop(reply)
                    raise
            else:
                # The consumer failed: its changes are not saved, so the copy here must
                # not keep them either.
                cache.drop(reply)


def _parked(message: Message) -> bool:
    """Whether enforce_ordering parked the message instead of running its consumer."""
    state = message.__dict__.get("_ordering")
    return state is not None and state[0] == "parked"


def _refused_in_buffer(reply: str) -> bool:
    """Whether the running consumer buffered a reply that refuses the handshake."""
    for _layer, name, content, group in pending_sends.get(getcurrent(), ()):
        if not group and name == reply and (content.get("close") or content.get("accept") is False):
            return True
    return False


# -- the HTTP session of a connect (or HTTP) message -----------------------------------


def session_key_from_message(content: dict) -> str | None:
    """The ``session_key`` query parameter, else the session cookie, of an HTTP or
    ``websocket.connect`` message."""
    query = content.get("query_string")
    if query:
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        values = parse_qs(query).get("session_key")
        if values and values[0]:
            return values[0]
    cookies = [
        value.decode("latin-1") if isinstance(value, bytes) else value
        for name, value in content.get("headers") or ()
        if name in (b"cookie", "cookie")
    ]
    if cookies:
        return parse_cookie("; ".join(cookies)).get(settings.SESSION_COOKIE_NAME) or None
    return None


def http_session(func: Consumer) -> Consumer:
    """``message.http_session``: the browser's Django session named by the message's
    ``session_key`` query parameter or session cookie (None when it has neither). Changes
    are saved after the consumer returns."""

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args)
        if "http_session" in message.__dict__:
            return func(*args, **kwargs)
        key = session_key_from_message(message.content)
        message.http_session = (  # type: ignore[attr-defined]
            http_session_engine().SessionStore(session_key=key) if key else None
        )
        result = func(*args, **kwargs)
        session = message.http_session  # type: ignore[attr-defined]
        if session is not None and session.modified:
            session.save()
        return result

    return inner  # type: ignore[return-value]


def channel_and_http_session(func: Consumer) -> Consumer:
    """Both sessions; the HTTP session's key is kept in the channel session on connect,
    so ``message.http_session`` is there on the socket's later messages too."""

    @http_session
    @channel_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args)
        channel_session = message.channel_session  # type: ignore[attr-defined]
        name = settings.SESSION_COOKIE_NAME
        if message.http_session is not None:  # type: ignore[attr-defined]
            key = message.http_session.session_key  # type: ignore[attr-defined]
            if key and channel_session.get(name) != key:
                channel_session[name] = key
        elif channel_session.get(name):
            # Lazy: the store is read only when the consumer uses the session.
            message.http_session = http_session_engine().SessionStore(  # type: ignore[attr-defined]
                session_key=channel_session[name]
            )
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


# -- strict ordering ---------------------------------------------------------------------


def enforce_ordering(func: Consumer | None = None, slight: bool = False) -> Any:
    """Run a socket's messages strictly in ``order`` sequence: a message that comes early
    waits (parked in the layer, no greenlet held) and is put back on its channel as soon
    as the message before it has run. Implies ``channel_session``, which keeps the next
    expected ``order``; decorate every consumer of the socket's messages, connect too."""
    if slight:
        raise ValueError(
            "enforce_ordering(slight=True) is gone (as in Channels 1.1): the consumer pool "
            "already runs one socket's messages one at a time in the order it receives "
            "them (ORDERED_DISPATCH). Remove the decorator, or use @enforce_ordering for a "
            "strict sequence"
        )
    if func is None:
        return enforce_ordering
    return _ordered(func)


def _ordered(func: Consumer) -> Consumer:
    @channel_session
    @functools.wraps(func)
    def run_in_turn(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args)
        order = message.content.get("order")
        if type(order) is not int:
            raise ValueError(
                "@enforce_ordering needs messages with an integer 'order' (websocket.* "
                "messages have one); the message on %s has %r" % (message.channel_name, order)
            )
        session = message.channel_session  # type: ignore[attr-defined]
        expected = session.get(NEXT_ORDER_KEY, 0)
        if order > expected:
            _park(message, order)
            message.__dict__["_ordering"] = ("parked", order)
            return None
        if order < expected:
            logger.warning(
                "message %d of %s on %s came after message %d had run; dropped",
                order,
                message.content["reply_channel"],
                message.channel_name,
                expected,
            )
            return None
        message.__dict__["_ordering"] = ("running", order)
        result = func(*args, **kwargs)
        session[NEXT_ORDER_KEY] = order + 1
        return result

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args)
        try:
            result = run_in_turn(*args, **kwargs)
        except ConsumeLater:
            raise  # it runs again with the same order
        except BaseException:
            state = message.__dict__.get("_ordering")
            if state is not None and state[0] == "running":
                # A failed message still had its turn: the next one must not wait for ever.
                _advance(message, state[1] + 1)
                _release(message, state[1] + 1)
            raise
        state = message.__dict__.get("_ordering")
        if state is not None:
            what, order = state
            if what == "running":
                _release(message, order + 1)
            elif _next_order(message) == order:
                # Its turn came while it was being parked: release it ourselves.
                _release(message, order)
        return result

    return inner  # type: ignore[return-value]


def wait_channel_name(reply_channel: str, order: int) -> str:
    """Where message ``order`` of a socket waits for its turn: a single-reader channel
    whose name cannot be guessed without the reply channel's."""
    digest = hashlib.sha256(f"{reply_channel}#{order}".encode()).hexdigest()
    return "geventchannels.wait?" + digest[:40]


def _park(message: Message, order: int) -> None:
    reply = message.content["reply_channel"]
    try:
        message.channel_layer.send(
            wait_channel_name(reply, order),
            {"channel": message.channel_name, "content": message.content},
        )
    except ChannelFull:
        logger.error("message %d of %s could not wait for its turn; dropped", order, reply)


def _next_order(message: Message) -> int:
    """The next expected order as the store has it now (this process's copy is the store's
    when the layer does not cross processes)."""
    reply = message.content["reply_channel"]
    cached = cache_for(message.channel_layer)
    session = cached.get(reply) if cached is not None else None
    if session is None:
        session = session_for_reply_channel(reply)
    return session.get(NEXT_ORDER_KEY, 0)


def _advance(message: Message, next_order: int) -> None:
    reply = message.content["reply_channel"]
    cache.drop(reply)
    session = session_for_reply_channel(reply)
    if session.get(NEXT_ORDER_KEY, 0) < next_order:
        session[NEXT_ORDER_KEY] = next_order
        save_channel_session(session)


def _release(message: Message, order: int) -> None:
    """Put message ``order`` of the socket back on its channel if it is waiting."""
    layer = message.channel_layer
    reply = message.content["reply_channel"]
    _channel, parked = layer.receive([wait_channel_name(reply, order)], False)
    if parked is None:
        return
    for attempt in range(REQUEUE_ATTEMPTS):
        try:
            layer.send(parked["channel"], parked["content"])
            return
        except ChannelFull:
            gevent.sleep(0.01 * (attempt + 1))
    logger.error(
        "message %d of %s was lost: its channel %s stayed full when its turn came",
        order,
        reply,
        parked["channel"],
    )
    if parked["channel"].startswith("websocket."):
        try:
            layer.send(reply, {"close": 1013})
        except Exception:
            pass
