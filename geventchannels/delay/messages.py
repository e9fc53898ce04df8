"""The ``asgi.delay`` message: ``{"channel": name, "delay": milliseconds, "content": {...}}``
(ASGI's delay protocol, as Channels 1.x sends it), how one is built and how one is checked.

Both services check a message the same way; what fails is dropped with its reason, never
raised into the service.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidChannelName
from ..layers.base import DELAY_CHANNEL, BaseChannelLayer

__all__ = ["DELAY_CHANNEL", "BadDelayMessage", "Delayed", "check", "delay_message"]


class BadDelayMessage(ValueError):
    """A message on asgi.delay that cannot be delivered; the text says why."""


@dataclass(frozen=True, slots=True)
class Delayed:
    """A checked delay request: send ``content`` to ``channel``, ``seconds`` after it was
    sent to asgi.delay."""

    channel: str
    content: dict
    seconds: float


def delay_milliseconds(value: Any) -> float:
    """``value`` as a delay in milliseconds: a finite number, at least 0. Raises
    ValueError saying what is wrong otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"the delay must be a number of milliseconds, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"the delay must be a finite number of milliseconds, not {value!r}")
    if value < 0:
        raise ValueError(f"the delay must not be negative, got {value!r} ms")
    return value


def delay_message(channel: str, content: dict, seconds: float, layer: BaseChannelLayer) -> dict:
    """The asgi.delay message that delivers ``content`` to ``channel`` after ``seconds``
    (what ``Channel(channel).send(content, delay=seconds)`` sends). Raises at once for
    what the service would drop: a bad channel name, a negative or non-numeric delay,
    content that is not a dict."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"delay must be a number of seconds, not {seconds!r}")
    milliseconds = delay_milliseconds(seconds * 1000)
    if not isinstance(content, dict):
        raise TypeError(f"only dicts can be sent on a channel, got {type(content).__name__}")
    layer.valid_channel_name(channel)
    if milliseconds == int(milliseconds):
        milliseconds = int(milliseconds)
    return {"channel": channel, "delay": milliseconds, "content": content}


def check(message: Any, layer: BaseChannelLayer) -> Delayed:
    """The delay request in a message taken from asgi.delay; raises BadDelayMessage, whose
    text names the destination (when there is one) and what is wrong."""
    try:
        return _check(message, layer)
    except BadDelayMessage as bad:
        raise BadDelayMessage(describe(message) + str(bad)) from None


def _check(message: Any, layer: BaseChannelLayer) -> Delayed:
    if not isinstance(message, dict):
        raise BadDelayMessage(f"it is a {type(message).__name__}, not a dict")
    missing = [key for key in ("channel", "delay", "content") if key not in message]
    if missing:
        raise BadDelayMessage(
            "it has no %s key (its keys: %s)"
            % (" or ".join(missing), ", ".join(map(str, message)) or "none")
        )
    channel, content = message["channel"], message["content"]
    try:
        layer.valid_channel_name(channel)
    except InvalidChannelName as error:
        raise BadDelayMessage(f"its channel is not valid: {error}") from None
    if not isinstance(content, dict):
        raise BadDelayMessage(f"its content is a {type(content).__name__}, not a dict")
    try:
        milliseconds = delay_milliseconds(message["delay"])
    except ValueError as error:
        raise BadDelayMessage(str(error)) from None
    return Delayed(channel, content, milliseconds / 1000)


def describe(message: Any) -> str:
    """Where a message was going, for a log line (never its content)."""
    if isinstance(message, dict):
        channel = message.get("channel")
        if isinstance(channel, str):
            return f"to {channel[:120]!r}: "
    return ""
