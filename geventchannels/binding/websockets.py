"""WebsocketBinding: a Binding whose messages travel on a stream of a multiplexed socket.

::

    class ItemBinding(WebsocketBinding):
        model = "shop.Item"
        stream = "items"
        fields = ["name", "price"]

        @classmethod
        def group_names(cls, instance):
            return ["items"]

        def has_permission(self, user, action, pk):
            return user.is_staff

    class Shop(WebsocketDemultiplexer):
        consumers = {"items": ItemBinding.consumer}

        def connection_groups(self, **kwargs):
            return ["items"]

Clients then get ``{"stream": "items", "payload": {"action": "update", "pk": 3,
"model": "shop.item", "data": {"name": ..., "price": ...}}}`` and send
``{"stream": "items", "payload": {"action": "update", "pk": 3, "data": {"price": 9}}}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from django.core import serializers
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist, ValidationError
from django.core.serializers.base import DeserializationError
from django.db import DatabaseError
from django.db.models import Model

from ..generic.websockets import WebsocketMultiplexer
from ..message import Message
from .base import Binding, InboundError

logger = logging.getLogger(__name__)


class WebsocketBinding(Binding):
    """Outbound and inbound binding over the ``{"stream", "payload"}`` envelope.

    Still to write: ``group_names`` and ``has_permission``. Inbound messages are checked
    against the bound fields and the model's validation (``full_clean``) before they are
    saved.
    """

    model = None
    #: Handle each socket's messages strictly in order (``enforce_ordering``).
    strict_ordering: ClassVar[bool] = False

    # -- outbound --------------------------------------------------------------------

    @classmethod
    def encode(cls, stream: str, payload: Any) -> dict:
        return WebsocketMultiplexer.encode(stream, payload)

    def serialize(self, instance: Model, action: str) -> dict:
        return {
            "action": action,
            "pk": instance.pk,
            "data": self.serialize_data(instance),
            "model": self.model_label,
        }

    def serialize_data(self, instance: Model) -> dict:
        """The bound fields of ``instance`` (foreign keys as their pk, many-to-many as a
        list of pks), as Django's serializers give them."""
        return serializers.serialize("python", [instance], fields=self.field_names())[0]["fields"]

    # -- inbound ---------------------------------------------------------------------

    @classmethod
    def get_handler(cls) -> Any:
        handler = super().get_handler()
        if cls.strict_ordering:
            from ..sessions import enforce_ordering

            handler = enforce_ordering(handler)
        return handler

    @classmethod
    def trigger_inbound(cls, message: Message, **kwargs: Any) -> None:
        """Act on ``websocket.receive`` only (a demultiplexer also forwards connects and
        disconnects)."""
        if message.channel_name == "websocket.receive":
            super().trigger_inbound(message, **kwargs)

    def deserialize(self, message: Message) -> tuple[str, Any, Any]:
        try:
            body = json.loads(message["text"])
        except (KeyError, TypeError, ValueError, RecursionError):
            raise InboundError("not a JSON text frame") from None
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise InboundError('expected {"action": ..., "pk": ..., "data": {...}}')
        return body["action"], body.get("pk"), body.get("data")

    def writable_fields(self) -> dict[str, Any]:
        """The fields a client may set, by name."""
        meta = self.get_model()._meta
        names = self.field_names()
        return {
            f.name: f
            for f in [*meta.concrete_fields, *meta.many_to_many]
            if f.editable and not f.primary_key and (names is None or f.name in names)
        }

    def _hydrate(self, pk: Any, data: Any) -> Any:
        """A DeserializedObject from the client's ``data``, refusing fields it may not set."""
        if not isinstance(data, dict):
            raise InboundError("data must be an object of field values")
        unknown = sorted(set(data) - set(self.writable_fields()))
        if unknown:
            raise InboundError(f"fields that cannot be set: {', '.join(unknown)}")
        row = {"model": self.model_label, "pk": pk, "fields": data}
        try:
            return next(serializers.deserialize("python", [row]))
        except (DeserializationError, ValidationError, FieldDoesNotExist) as error:
            raise InboundError(f"invalid data: {_first_line(error)}") from None

    def _save(self, instance: Model, hydrated: Any, names: list[str]) -> None:
        fields = self.writable_fields()
        try:
            instance.full_clean(exclude=[n for n in _all_field_names(instance) if n not in names])
        except ValidationError as error:
            raise InboundError("invalid data", errors=error.message_dict) from None
        try:
            instance.save()
            for name, values in hydrated.m2m_data.items():
                if name in names:
                    getattr(instance, fields[name].name).set(values)
        except (DatabaseError, ValueError) as error:
            logger.warning(
                "binding %s: %s refused: %s", type(self).__qualname__, self.action, error
            )
            raise InboundError("refused by the database") from None

    def create(self, data: Any) -> None:
        hydrated = self._hydrate(None, data)
        self._save(hydrated.object, hydrated, list(self.writable_fields()))

    def update(self, pk: Any, data: Any) -> None:
        try:
            instance = self.get_model()._default_manager.get(pk=pk)
        except ObjectDoesNotExist:
            raise InboundError("not found") from None
        except (ValueError, TypeError, ValidationError):
            raise InboundError(f"invalid pk {pk!r}") from None
        hydrated = self._hydrate(pk, data)
        fields = self.writable_fields()
        for name in data:
            field = fields[name]
            if not field.many_to_many:
                setattr(instance, field.attname, getattr(hydrated.object, field.attname))
        self._save(instance, hydrated, list(data))

    def delete(self, pk: Any) -> None:
        try:
            super().delete(pk)
        except (ValueError, TypeError, ValidationError):
            raise InboundError(f"invalid pk {pk!r}") from None


class WebsocketBindingWithMembers(WebsocketBinding):
    """A WebsocketBinding that also sends attributes, properties and methods (called with
    no arguments) of the instance: ``send_members = ["total", "owner.name"]`` (dots follow
    attributes; sent as ``owner__name``)."""

    model = None
    send_members: ClassVar[list[str]] = []

    def serialize_data(self, instance: Model) -> dict:
        data = super().serialize_data(instance)
        for member in self.send_members:
            value: Any = instance
            for part in member.split("."):
                value = getattr(value, part)
            data[member.replace(".", "__")] = value() if callable(value) else value
        return data


def _all_field_names(instance: Model) -> list[str]:
    meta = instance._meta
    return [f.name for f in [*meta.concrete_fields, *meta.many_to_many]]


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
