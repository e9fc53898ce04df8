"""Data binding: model changes sent to groups, client messages applied to models
(``channels.binding`` in Channels 1.x)."""

from .base import CREATE, DELETE, UPDATE, Binding

__all__ = ["CREATE", "DELETE", "UPDATE", "Binding"]
