"""Class-based consumers (``channels.generic`` in Channels 1.x)."""

from .base import BaseConsumer

__all__ = ["BaseConsumer"]
