"""BaseConsumer: a class that is routed like a function consumer.

The router calls the class with the message, so each message gets a fresh instance, and the
constructor dispatches it to the method ``method_mapping`` names for its channel::

    class Thumbnailer(BaseConsumer):
        method_mapping = {"thumbnails": "make", "thumbnails.cancel": "cancel"}

        def make(self, message, **kwargs): ...

    channel_routing = [Thumbnailer.as_route()]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from ..message import Message
from ..routing import RouteClass, route_class

Handler = Callable[..., Any]


class BaseConsumer:
    """Dispatches one message to the method its channel maps to, on construction."""

    #: channel name -> name of the method that handles messages on it.
    method_mapping: ClassVar[dict[str, str]] = {}
    #: Wrap the handler in ``channel_session`` (``message.channel_session``).
    channel_session: bool = False
    #: Wrap the handler in ``channel_session_user`` (``message.user`` as well).
    channel_session_user: bool = False

    def __init__(self, message: Message, **kwargs: Any) -> None:
        self.message = message
        self.kwargs = kwargs
        self.dispatch(message, **kwargs)

    @classmethod
    def channel_names(cls) -> set[str]:
        """The channels to route to this class: the keys of ``method_mapping``."""
        return set(cls.method_mapping)

    @classmethod
    def as_route(cls, attrs: dict[str, Any] | None = None, **filters: Any) -> RouteClass:
        """A route to this class behind ``filters``; ``attrs`` makes it a subclass with
        those class attributes first (``Chat.as_route({"groups": ["lobby"]}, path=...)``)."""
        consumer = cls
        if attrs:
            if not isinstance(attrs, dict):
                raise TypeError(f"attrs must be a dict of class attributes, got {attrs!r}")
            consumer = type(cls.__name__, (cls,), dict(attrs))
        return route_class(consumer, **filters)

    def get_handler(self, message: Message, **kwargs: Any) -> Handler:
        """The bound method for the message's channel, wrapped in the session decorators
        the class flags ask for."""
        try:
            name = self.method_mapping[message.channel_name]
        except KeyError:
            raise ValueError(
                f"{type(self).__qualname__} has no method for channel {message.channel_name!r}; "
                f"its method_mapping covers {sorted(self.method_mapping)}"
            ) from None
        handler = getattr(self, name)
        if self.channel_session_user:
            from ..auth import channel_session_user

            return channel_session_user(handler)
        if self.channel_session:
            from ..sessions import channel_session

            return channel_session(handler)
        return handler

    def dispatch(self, message: Message, **kwargs: Any) -> Any:
        """Call the handler with the message and the route's keyword arguments."""
        return self.get_handler(message, **kwargs)(message, **kwargs)
