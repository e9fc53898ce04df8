"""Consumers under test without a server: fresh in-memory layers, a client that sends
messages and runs the routed consumer in the test itself, and route overrides.

A consumer run by :class:`Client` behaves as in the consumer pool (its sends are kept
until it returns, ``DenyConnection`` refuses, ``WebsocketCloseException`` closes), except
that an error is raised in the test, with the consumer's traceback, instead of logged.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import secrets
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.test.testcases import TestCase, TransactionTestCase

from .. import DEFAULT_CHANNEL_LAYER
from ..asgi import ChannelLayerWrapper, channel_layers
from ..channel import Group, discard_buffered, flush_buffered, start_buffering
from ..exceptions import ChannelSocketException, ConsumeLater, DenyConnection
from ..layers.base import BaseChannelLayer
from ..layers.inmemory import InMemoryChannelLayer
from ..message import Message
from ..routing import Router, include
from ..signals import consumer_finished, consumer_started
from . import commits
from .commits import ImmediateCommits

T = TypeVar("T")

#: The configuration keys every layer takes, so an in-memory test layer can honour the
#: CONFIG / TEST_CONFIG of any backend (capacity, expiry...) and skip the rest (hosts).
_COMMON_OPTIONS = frozenset(inspect.signature(BaseChannelLayer.__init__).parameters) - {"self"}


def in_memory_wrapper(alias: str) -> ChannelLayerWrapper:
    """A new in-memory layer for ``alias`` with its configured routing and the layer
    options of its CONFIG and TEST_CONFIG that an in-memory layer takes."""
    configs = channel_layers.configs
    if alias not in configs:
        defined = ", ".join(map(repr, configs)) or "none"
        raise KeyError(f"no channel layer named {alias!r} in CHANNEL_LAYERS (defined: {defined})")
    config = configs[alias]
    options = {**(config.get("CONFIG") or {}), **(config.get("TEST_CONFIG") or {})}
    layer = InMemoryChannelLayer(**{k: v for k, v in options.items() if k in _COMMON_OPTIONS})
    # The test itself consumes: no "nothing consumes this channel" warning.
    layer.register_consumer_pool(None)
    wrapper = ChannelLayerWrapper(layer, alias, config.get("ROUTING") or [])
    # Imported now, as Channels 1.x did: modules it imports (bindings) are live in the test.
    wrapper.router  # noqa: B018
    return wrapper


class TestLayers:
    """Swap fresh in-memory layers in for ``aliases`` (every configured alias when
    None) and put the previous ones back on :meth:`stop`; also a context manager."""

    __test__ = False  # not a pytest test class

    def __init__(self, aliases: list[str] | None = None):
        self.aliases = aliases
        self.wrappers: dict[str, ChannelLayerWrapper] = {}
        self._previous: dict[str, ChannelLayerWrapper | None] = {}

    def start(self) -> dict[str, ChannelLayerWrapper]:
        aliases = list(channel_layers.configs) if self.aliases is None else self.aliases
        for alias in aliases:
            wrapper = self.wrappers[alias] = in_memory_wrapper(alias)
            self._previous[alias] = channel_layers.set(alias, wrapper)
        return self.wrappers

    def stop(self) -> None:
        for alias, previous in self._previous.items():
            channel_layers.set(alias, previous)
        for wrapper in self.wrappers.values():
            wrapper.channel_layer.close()
        self._previous.clear()
        self.wrappers.clear()

    def __enter__(self) -> dict[str, ChannelLayerWrapper]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def next_message(channel: str, alias: str = DEFAULT_CHANNEL_LAYER) -> Message | None:
    """The next message waiting on ``channel`` of the ``alias`` layer, or None (never waits)."""
    commits.run_released()
    wrapper = channel_layers[alias]
    name, content = wrapper.channel_layer.receive([channel])
    if name is None or content is None:
        return None
    return Message(content, name, wrapper.channel_layer)


@contextlib.contextmanager
def _connections_kept_open() -> Iterator[None]:
    """The consumer signals without closing database connections: inside a TestCase the
    connection holds the test's transaction (Django's test client does the same)."""
    from ..signals import _CLOSE_UID, close_old_connections

    for signal in (consumer_started, consumer_finished):
        signal.disconnect(dispatch_uid=_CLOSE_UID)
    try:
        yield
    finally:
        for signal in (consumer_started, consumer_finished):
            signal.connect(close_old_connections, dispatch_uid=_CLOSE_UID)


def run_consumer(consumer: Callable[..., T], message: Message, kwargs: dict) -> T | None:
    """Run ``consumer`` as the pool would, in this greenlet; its errors are raised here."""
    with _connections_kept_open():
        consumer_started.send(sender=Client, environ={})
        try:
            start_buffering()
            try:
                result = consumer(message, **kwargs)
            except ChannelSocketException as error:
                unavailable = flush_buffered()
                error.run(message)
                if unavailable is not None:
                    raise unavailable from error
                return None
            except DenyConnection:
                discard_buffered()
                if message.reply_channel is not None:
                    message.reply_channel.send({"close": True}, immediately=True)
                return None
            except ConsumeLater:
                discard_buffered()
                message.channel_layer.send(message.channel_name, message.content)
                return None
            except BaseException:
                discard_buffered()
                raise
            commits.run_released()
            unavailable = flush_buffered()
            if unavailable is not None:
                raise unavailable
            return result
        finally:
            consumer_finished.send(sender=Client)


#: Django 5.1 made ``_pre_setup`` a classmethod (TransactionTestCase runs it from
#: setUpClass for the first test); overrides must take the same form.
PRE_SETUP_IS_CLASSMETHOD = isinstance(
    inspect.getattr_static(TransactionTestCase, "_pre_setup"), classmethod
)


class AfterPreSetup:
    """Runs the class's ``_after_pre_setup`` once Django's ``_pre_setup`` has run, in the
    form the running Django release calls it (a method, or a classmethod since 5.1)."""

    @classmethod
    def _after_pre_setup(cls) -> None:
        raise NotImplementedError

    if PRE_SETUP_IS_CLASSMETHOD:

        @classmethod
        def _pre_setup(cls) -> None:
            super()._pre_setup()  # type: ignore[misc]
            cls._after_pre_setup()

    else:

        def _pre_setup(self) -> None:  # type: ignore[misc]
            super()._pre_setup()  # type: ignore[misc]
            self._after_pre_setup()


class ChannelTestCaseMixin(AfterPreSetup):
    """Each test gets fresh in-memory layers for ``test_channel_aliases`` (every
    configured alias by default), whatever backend the settings name."""

    test_channel_aliases: list[str] | None = None
    #: Run ``transaction.on_commit`` callbacks made in the test's own transaction at
    #: once, as in autocommit: what a binding sends on commit reaches the test.
    on_commit_immediately = True
    _test_layers: TestLayers | None = None
    _commits: ImmediateCommits | None = None

    @classmethod
    def _after_pre_setup(cls) -> None:
        cls._test_layers = TestLayers(cls.test_channel_aliases)
        cls._test_layers.start()
        if cls.on_commit_immediately and issubclass(cls, TestCase):
            cls._commits = ImmediateCommits(sorted(cls.databases))

    def _post_teardown(self) -> None:
        layers, type(self)._test_layers = self._test_layers, None
        immediate, type(self)._commits = self._commits, None
        if immediate is not None:
            immediate.stop()
        if layers is not None:
            layers.stop()
        super()._post_teardown()  # type: ignore[misc]

    def get_next_message(
        self, channel: str, alias: str = DEFAULT_CHANNEL_LAYER, require: bool = False
    ) -> Message | None:
        """The next message sent to ``channel`` during the test, or None; with
        ``require`` the test fails when there is none."""
        message = next_message(channel, alias)
        if message is None and require:
            raise AssertionError(f"expected a message on channel {channel!r}, got none")
        return message


class ChannelTestCase(ChannelTestCaseMixin, TestCase):
    """Django's TestCase (a transaction per test) with fresh in-memory channel layers."""


class TransactionChannelTestCase(ChannelTestCaseMixin, TransactionTestCase):
    """Django's TransactionTestCase with fresh in-memory channel layers."""


class Client:
    """Sends messages with its own reply channel and runs the consumer routed for them
    in the test: ``client.send_and_consume("chat", {"text": "hi"})``."""

    def __init__(self, alias: str = DEFAULT_CHANNEL_LAYER):
        self.alias = alias
        self.reply_channel = f"test.reply.{secrets.token_hex(8)}"

    @property
    def channel_layer(self) -> ChannelLayerWrapper:
        return channel_layers[self.alias]

    def get_next_message(self, channel: str) -> Message | None:
        return next_message(channel, self.alias)

    def get_consumer_by_channel(self, channel: str) -> Callable | None:
        """The consumer a message on ``channel`` with an empty text would be routed to."""
        message = Message({"text": ""}, channel, self.channel_layer.channel_layer)
        match = self.channel_layer.router.match(message)
        return match[0] if match else None

    def send(self, to: str, content: dict | None = None) -> None:
        """Send ``content`` (with this client's ``reply_channel``) to channel ``to``."""
        content = dict(content or {})
        content.setdefault("reply_channel", self.reply_channel)
        self.channel_layer.channel_layer.send(to, content)

    def consume(self, channel: str, fail_on_none: bool = True) -> Any:
        """Take the next message on ``channel`` and run its consumer; returns what the
        consumer returned. Fails when there is no message or no route (unless
        ``fail_on_none`` is False)."""
        message = self.get_next_message(channel)
        if message is None:
            if fail_on_none:
                raise AssertionError(f"no message on channel {channel!r}")
            return None
        match = self.channel_layer.router.match(message)
        if match is None:
            if fail_on_none:
                keys = ", ".join(sorted(message.content))
                raise AssertionError(f"no route matches the message on {channel!r} ({keys})")
            return None
        consumer, kwargs = match
        return run_consumer(consumer, message, kwargs)

    def send_and_consume(
        self, channel: str, content: dict | None = None, fail_on_none: bool = True
    ) -> Any:
        self.send(channel, content)
        return self.consume(channel, fail_on_none=fail_on_none)

    def receive(self) -> dict | None:
        """The content of the next message sent to this client's reply channel, or None."""
        message = self.get_next_message(self.reply_channel)
        return message.content if message is not None else None

    def join_group(self, group_name: str) -> None:
        Group(group_name, alias=self.alias).add(self.reply_channel)


class apply_routes:  # noqa: N801 - the 1.x name
    """Replace the routing of layers for a block, a test function or a TestCase class::

    with apply_routes([route("chat", consumer)]):
        ...

    ``routes`` is a list of routes, a list of such lists (each included), one route, or
    anything a Router takes (a dict, a dotted path).
    """

    def __init__(self, routes: Any, aliases: list[str] | None = None):
        self.routes = routes
        self.aliases = aliases or [DEFAULT_CHANNEL_LAYER]
        self._previous: dict[str, tuple[Any, Router]] = {}

    def _routing(self) -> Any:
        routes = self.routes
        if isinstance(routes, list | tuple):
            if routes and isinstance(routes[0], list | tuple):
                return [include(list(inner)) for inner in routes]
            return list(routes)
        if hasattr(routes, "leaves"):
            return [routes]
        return routes

    def enter(self) -> None:
        routing = self._routing()
        for alias in self.aliases:
            wrapper = channel_layers[alias]
            self._previous[alias] = (wrapper.routing, wrapper.router)
            wrapper.routing = routing
            wrapper.router = Router(routing)

    def exit(self, *exc: object) -> None:
        for alias, (routing, router) in self._previous.items():
            wrapper = channel_layers[alias]
            wrapper.routing = routing
            wrapper.router = router
        self._previous.clear()

    __enter__ = enter
    __exit__ = exit

    def __call__(self, test: T) -> T:
        if isinstance(test, type):
            set_up, tear_down = test.setUp, test.tearDown  # type: ignore[attr-defined]

            def new_set_up(case: Any) -> None:
                self.enter()
                set_up(case)

            def new_tear_down(case: Any) -> None:
                try:
                    tear_down(case)
                finally:
                    self.exit()

            test.setUp = new_set_up  # type: ignore[attr-defined]
            test.tearDown = new_tear_down  # type: ignore[attr-defined]
            return test

        @functools.wraps(test)  # type: ignore[arg-type]
        def inner(*args: Any, **kwargs: Any) -> Any:
            with self:
                return test(*args, **kwargs)  # type: ignore[operator]

        return inner  # type: ignore[return-value]
