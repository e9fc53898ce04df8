"""Origin validators: decorators that refuse a WebSocket connect whose ``Origin`` header
is missing or not allowed, as Channels 1.x's did::

    @allowed_hosts_only
    def ws_connect(message):
        message.reply_channel.send({"accept": True})

A refused connect raises :class:`~geventchannels.exceptions.DenyConnection`, which the
consumer pool answers with HTTP 403. They decorate functions and methods of consumer
classes alike, and read headers as the server sends them (``[[name, value], ...]`` of
bytes) or as a dict (Channels 1.x's test client sent one), names in any case.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from ..exceptions import DenyConnection

#: The hosts Django accepts when DEBUG is on and ALLOWED_HOSTS is empty.
DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]


class BaseOriginValidator:
    """Refuses the connect unless :meth:`validate_origin` accepts its origin (the
    ``Origin`` header, ASCII); subclasses implement that method."""

    def __init__(self, func: Callable[..., Any]):
        functools.update_wrapper(self, func)
        self.func = func

    def __call__(self, message: Any, *args: Any, **kwargs: Any) -> Any:
        self.check(message)
        return self.func(message, *args, **kwargs)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        """As a method of a consumer class: the message is the argument after ``self``."""
        if instance is None:
            return self

        def bound(message: Any, *args: Any, **kwargs: Any) -> Any:
            self.check(message)
            return self.func(instance, message, *args, **kwargs)

        return functools.update_wrapper(bound, self.func)

    def check(self, message: Any) -> None:
        """Raise DenyConnection unless the message's origin is valid."""
        if not self.validate_origin(message, self.get_origin(message)):
            raise DenyConnection

    def get_header(self, message: Any, name: bytes | str) -> list:
        """The values of header ``name`` in ``message["headers"]`` as a list (the value
        after the name, as 1.x returned it); KeyError when the header is absent."""
        wanted = _text(name).lower()
        headers = message.content.get("headers") or ()
        if isinstance(headers, dict):
            headers = headers.items()
        for header in headers:
            try:
                key, *values = header
            except ValueError:
                continue
            if _text(key).lower() == wanted and values:
                return values
        raise KeyError(f"no header named {wanted!r}")

    def get_origin(self, message: Any) -> str:
        """The ``Origin`` header; DenyConnection when it is missing or not ASCII."""
        try:
            value = self.get_header(message, b"origin")[0]
        except KeyError:
            raise DenyConnection from None
        if isinstance(value, str):
            value = value.encode("utf-8")
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise DenyConnection from None

    def validate_origin(self, message: Any, origin: str) -> bool:
        """Whether the connect from ``origin`` may go on."""
        raise NotImplementedError(f"{type(self).__name__} must implement validate_origin()")


class AllowedHostsOnlyOriginValidator(BaseOriginValidator):
    """Accepts origins whose host is in ``settings.ALLOWED_HOSTS``, with Django's rules:
    ``"*"`` matches any host, ``".example.com"`` the domain and its subdomains, the port
    is not compared; with DEBUG and no ALLOWED_HOSTS, the local hosts Django allows."""

    def validate_origin(self, message: Any, origin: str) -> bool:
        host = origin_host(origin)
        return bool(host) and validate_host(host, allowed_hosts())


allowed_hosts_only = AllowedHostsOnlyOriginValidator


def allowed_hosts() -> list[str]:
    """ALLOWED_HOSTS as Django applies it: with DEBUG on and the list empty, the local
    hosts Django allows then."""
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        return list(DEBUG_HOSTS)
    return allowed


def origin_host(origin: str) -> str:
    """The host of an origin as Django compares it with ALLOWED_HOSTS (lower case, IPv6 in
    brackets, no port); "" when the origin has none (``null``, not a URL)."""
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return ""
    domain, _port = split_domain_port(netloc.rpartition("@")[2])
    return domain


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
