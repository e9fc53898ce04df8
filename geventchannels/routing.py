"""Routing: which consumer handles a message, by channel name and regex filters on its keys.

::

    channel_routing = [
        route("websocket.receive", "chat.consumers.ws_message", path=r"^/chat/(?P<room>[^/]+)/$"),
        route_class(ChatConsumer, path=r"^/live/"),
        include("news.routing.routes", path=r"^/news"),
    ]

Consumers may also name their channels themselves with ``@consumer("chat.receive")`` (or
``@Channel.consumer``); ``include("chat.consumers")`` then routes that module's
decorated consumers, in the order they are defined.

A filter is a regex ``re.match``-ed against the message key of the same name; its named
groups become the consumer's keyword arguments. ``include`` strips the part of the value
its own filter matched before the inner routes see it. The Router flattens all of this
into one list of candidates per channel, tried in order, so matching a message costs a
dict lookup plus the filters of the routes on its channel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from importlib import import_module
from types import ModuleType
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .utils import name_that_thing

Consumer = Callable[..., Any]
C = TypeVar("C", bound=Callable[..., Any])


def _import(path: str, what: str) -> Any:
    try:
        return import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(f"cannot import {what} {path!r}: {error}") from error


def _compile_filters(filters: dict[str, Any]) -> tuple[tuple[str, re.Pattern], ...]:
    compiled = []
    for key, pattern in filters.items():
        if isinstance(pattern, str | bytes):
            pattern = re.compile(pattern)
        elif not isinstance(pattern, re.Pattern):
            raise ValueError(
                f"filter {key}={pattern!r} must be a regex (a str or compiled pattern)"
            )
        if pattern.groups != len(pattern.groupindex):
            raise ValueError(
                f"filter {key}={pattern.pattern!r} has unnamed groups; use only named groups, "
                "(?P<name>...), or non-capturing ones, (?:...)"
            )
        compiled.append((key, pattern))
    return tuple(compiled)


def _channel_list(channels: str | Iterable[str]) -> list[str]:
    if isinstance(channels, str):
        return [channels]
    channels = list(channels)
    if not channels or not all(isinstance(name, str) for name in channels):
        raise ValueError(f"a route needs a channel name or a list of them, got {channels!r}")
    return channels


class Route:
    """One consumer for one or more channels, with optional filters."""

    def __init__(self, channels: str | Iterable[str], consumer: Consumer | str, **filters: Any):
        self.channels = _channel_list(channels)
        if isinstance(consumer, str):
            consumer = _import(consumer, "consumer")
        if not callable(consumer):
            raise ValueError(f"consumer {consumer!r} is not callable")
        self.consumer = consumer
        self.filters = _compile_filters(filters)

    def leaves(self) -> Iterable[tuple[str, tuple, Consumer]]:
        """(channel, filter levels, consumer) for the Router to index."""
        for channel in self.channels:
            yield channel, (self.filters,) if self.filters else (), self.consumer

    def match(self, message) -> tuple[Consumer, dict] | None:
        return _match_one(self.leaves(), message)

    def __repr__(self) -> str:
        return f"route({self.channels!r}, {name_that_thing(self.consumer)})"


class RouteClass(Route):
    """A route to a class-based consumer: channels come from ``channel_names()``."""

    def __init__(self, consumer: type | str, **filters: Any):
        if isinstance(consumer, str):
            consumer = _import(consumer, "consumer class")
        channel_names = getattr(consumer, "channel_names", None)
        if channel_names is None:
            raise ValueError(
                f"{consumer!r} has no channel_names(); route_class() takes a consumer class"
            )
        super().__init__(sorted(channel_names()), consumer, **filters)


class Include:
    """The routes of another routing list, behind this include's filters."""

    def __init__(self, routing: Any, **filters: Any):
        self.routing = resolve_routing(routing)
        self.filters = _compile_filters(filters)

    @property
    def channels(self) -> set[str]:
        return {channel for channel, _, _ in self.leaves()}

    def leaves(self) -> Iterable[tuple[str, tuple, Consumer]]:
        for entry in self.routing:
            for channel, levels, consumer in entry.leaves():
                yield channel, ((self.filters,) + levels) if self.filters else levels, consumer

    def match(self, message) -> tuple[Consumer, dict] | None:
        return _match_one(self.leaves(), message)


def route(channels: str | Iterable[str], consumer: Consumer | str, **filters: Any) -> Route:
    """Send messages on ``channels`` (a name or a list) that pass ``filters`` to ``consumer``
    (a callable or its dotted path)."""
    return Route(channels, consumer, **filters)


def route_class(consumer: type | str, **filters: Any) -> RouteClass:
    """Route a consumer class on the channels its ``channel_names()`` lists."""
    return RouteClass(consumer, **filters)


def include(routing: Any, **filters: Any) -> Include:
    """Add another routing (a list, dict or dotted path) behind ``filters``; the part of
    each filtered value they matched is removed before the inner routes see it."""
    return Include(routing, **filters)


def consumer(channels: str | Iterable[str], *more: str, **filters: Any) -> Callable[[C], C]:
    """Decorator: route messages on ``channels`` (names, or a list) that pass ``filters``
    to the decorated function (or class); ``include("its.module")`` adds it to a routing."""
    names = [name for group in (channels, *more) for name in _channel_list(group)]

    def register(func: C) -> C:
        entry = Route(names, func, **filters)
        # Keyed so that reloading the module replaces its routes instead of doubling them.
        key = (func.__qualname__, tuple(names), tuple(sorted(filters.items(), key=str)))
        _decorated.setdefault(func.__module__, {})[key] = entry
        return func

    return register


#: Routes of @consumer-decorated consumers: module name -> {key: route}, in definition order.
_decorated: dict[str, dict[tuple, Route]] = {}


def decorated_routes(module: ModuleType) -> list[Route]:
    """The routes of the consumers a module decorated with :func:`consumer`."""
    routes = _decorated.get(module.__name__)
    if not routes:
        raise ImproperlyConfigured(
            f"module {module.__name__!r} has no consumers decorated with @consumer(...) or "
            "@Channel.consumer(...); a routing is a list of routes, a {channel: consumer} "
            "dict, or a module of decorated consumers"
        )
    return list(routes.values())


def _import_routing(path: str) -> Any:
    """What a routing's dotted path names: a list or dict, or a module of consumers."""
    try:
        return import_string(path)
    except ImportError as error:
        try:
            return import_module(path)
        except ImportError:
            raise ImproperlyConfigured(f"cannot import routing {path!r}: {error}") from error


def resolve_routing(routing: Any) -> list:
    """A list of routes from a list, a {channel: consumer} dict, a module of decorated
    consumers, or a dotted path to one of them."""
    if isinstance(routing, str):
        routing = _import_routing(routing)
    if isinstance(routing, ModuleType):
        return decorated_routes(routing)
    if isinstance(routing, dict):
        return [Route(channel, consumer) for channel, consumer in routing.items()]
    if isinstance(routing, list | tuple):
        entries = list(routing)
        for entry in entries:
            if not hasattr(entry, "leaves"):
                raise ValueError(
                    "routing entries must be route(), route_class() or include() results, "
                    f"got {entry!r}"
                )
        return entries
    raise ImproperlyConfigured(
        "routing must be a list of routes, a {channel: consumer} dict, a module of "
        f"decorated consumers or a dotted path to one; got {routing!r}"
    )


# -- matching ---------------------------------------------------------------


def _match_value(pattern: re.Pattern, value: Any) -> tuple[re.Match | None, Any]:
    """Match ``value`` (str or bytes, whichever the pattern is not, is converted; bytes as
    UTF-8 with undecodable bytes kept) and return the match and the value matched."""
    if type(value) is str:
        if type(pattern.pattern) is bytes:
            value = value.encode("utf-8", "surrogateescape")
    elif type(value) is bytes:
        if type(pattern.pattern) is str:
            value = value.decode("utf-8", "surrogateescape")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
        if type(pattern.pattern) is bytes:
            value = value.encode()
    else:
        return None, value
    return pattern.match(value), value


def _apply_filters(filters: tuple, content: dict, kwargs: dict, strip: bool) -> dict | None:
    """Check one level of filters against ``content``; update ``kwargs`` with the named
    groups. With ``strip``, return the content for the next level with the matched
    prefixes removed."""
    stripped = None
    for key, pattern in filters:
        if key not in content:
            return None
        original = content[key]
        match, value = _match_value(pattern, original)
        if match is None:
            return None
        kwargs.update(match.groupdict())
        if strip:
            rest = value[match.end() :]
            if type(original) is bytes and type(rest) is str:
                rest = rest.encode("utf-8", "surrogateescape")
            elif type(original) is str and type(rest) is bytes:
                rest = rest.decode("utf-8", "surrogateescape")
            if stripped is None:
                stripped = dict(content)
            stripped[key] = rest
    return stripped if stripped is not None else content


def _match_levels(levels: tuple, content: dict) -> dict | None:
    kwargs: dict = {}
    last = len(levels) - 1
    for depth, filters in enumerate(levels):
        stripped = _apply_filters(filters, content, kwargs, depth < last)
        if stripped is None:
            return None
        content = stripped
    return kwargs


def _match_one(leaves: Iterable, message) -> tuple[Consumer, dict] | None:
    name = getattr(message, "channel_name", None) or message.channel.name
    for channel, levels, consumer in leaves:
        if channel == name:
            kwargs = _match_levels(levels, message.content) if levels else {}
            if kwargs is not None:
                return consumer, kwargs
    return None


# -- defaults ---------------------------------------------------------------


def connect_consumer(message, **kwargs: Any) -> None:
    """Accept a WebSocket no route handles (as Channels 1.x did)."""
    message.reply_channel.send({"accept": True})


def null_consumer(message, **kwargs: Any) -> None:
    """Ignore a message (WebSocket frames and disconnects no route handles)."""


DEFAULT_ROUTES = [
    Route("websocket.connect", connect_consumer),
    Route(["websocket.receive", "websocket.disconnect"], null_consumer),
]


class Router:
    """Finds the consumer for a message: the first matching route in order, then the
    defaults (accept WebSocket connects, ignore other WebSocket messages)."""

    def __init__(self, routing: Any):
        self.root = Include(routing)
        self._by_channel: dict[str, list[tuple[tuple, Consumer]]] = {}
        entries: list[Route | Include] = [self.root, *DEFAULT_ROUTES]
        for entry in entries:
            for channel, levels, consumer in entry.leaves():
                self._by_channel.setdefault(channel, []).append((levels, consumer))
        self.channels: set[str] = set(self._by_channel)

    def match(self, message) -> tuple[Consumer, dict] | None:
        """``(consumer, kwargs)`` for a Message, or None when no route matches."""
        name = getattr(message, "channel_name", None) or message.channel.name
        return self.match_content(name, message.content)

    def match_content(self, channel: str, content: dict) -> tuple[Consumer, dict] | None:
        """Like :meth:`match` for a channel name and message content (the worker's path)."""
        candidates = self._by_channel.get(channel)
        if candidates is None:
            return None
        for levels, consumer in candidates:
            if not levels:
                return consumer, {}
            kwargs = _match_levels(levels, content)
            if kwargs is not None:
                return consumer, kwargs
        return None

    def filter_keys(self, channel: str) -> set[str]:
        """The message keys the routes of ``channel`` filter on: the server uses it to
        decide whether a cheap part of a request is enough to know if a route claims it."""
        return {
            key
            for levels, _ in self._by_channel.get(channel, ())
            for filters in levels
            for key, _ in filters
        }

    def add_route(self, entry: Route | Include) -> None:
        """Append a route after the existing ones (and after the defaults)."""
        for channel, levels, consumer in entry.leaves():
            self._by_channel.setdefault(channel, []).append((levels, consumer))
        self.channels = set(self._by_channel)

    def __repr__(self) -> str:
        return f"<Router {', '.join(sorted(self.channels))}>"
