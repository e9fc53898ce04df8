"""Binding: keeps clients in step with a model, both ways.

Outbound, every save and delete of the model sends ``create``, ``update`` or ``delete``
to the groups :meth:`Binding.group_names` gives for the row. The groups of the row as it
was stored before the save are compared with those after it: a group the row left gets
``delete``, one it stayed in ``update``, one it joined ``create``. Messages go out when
the transaction commits (``transaction.on_commit``), so a rolled-back save sends nothing.

Inbound, :meth:`Binding.consumer` takes ``{"action", "pk", "data"}`` messages and applies
them after :meth:`Binding.has_permission`; a refused or invalid one is answered with an
error payload on the binding's stream.

A binding connects its model signals when its class is created (the model may still be an
``"app_label.Model"`` string then: Django connects the signals when the model loads), so a
binding is live once the module that defines it is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any, ClassVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from ..channel import Group
from ..message import Message

logger = logging.getLogger(__name__)

CREATE = "create"
UPDATE = "update"
DELETE = "delete"
ACTIONS = (CREATE, UPDATE, DELETE)

#: Where the groups of an instance before a save wait for the post_save signal.
_GROUPS_BEFORE = "_binding_groups_before"


class InboundError(Exception):
    """An inbound action that is refused or cannot be applied; answered to the client."""

    def __init__(self, error: str, errors: dict | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.errors = errors


class Binding:
    """A two-way binding between a model and groups of sockets.

    Outbound needs :meth:`group_names` and :meth:`serialize`; inbound needs
    :meth:`deserialize`, :meth:`has_permission`, :meth:`create` and :meth:`update`
    (:class:`~geventchannels.binding.websockets.WebsocketBinding` implements all but
    ``group_names`` and ``has_permission``). A subclass that sets ``model = None`` is
    abstract: it binds nothing.
    """

    #: The model class, or its ``"app_label.ModelName"``.
    model: ClassVar[type[Model] | str | None] = None
    #: The fields sent and accepted (``["__all__"]`` for all); or set ``exclude``.
    fields: ClassVar[Iterable[str] | str | None] = None
    #: The fields neither sent nor accepted, instead of ``fields``.
    exclude: ClassVar[Iterable[str] | None] = None
    #: ``app_label.modelname``, as Django's serializers name the model (set for you).
    model_label: ClassVar[str] = ""
    #: The stream name of this binding's messages.
    stream: ClassVar[str | None] = None
    #: Decorate the inbound consumer with ``channel_session_user`` (``message.user``).
    channel_session_user: ClassVar[bool] = True
    #: Decorate it with ``channel_session`` only (when ``channel_session_user`` is off).
    channel_session: ClassVar[bool] = False

    #: Set on the instance handling one change or one inbound message.
    instance: Model | None = None
    signal_kwargs: dict | None = None
    message: Message
    kwargs: dict
    user: Any = None
    action: str | None = None
    pk: Any = None
    data: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.model is None:
            if "model" in cls.__dict__:
                return
            raise ImproperlyConfigured(
                f"binding {cls.__qualname__} has no model: set model (a model class or "
                '"app_label.ModelName"), or model = None for an abstract binding'
            )
        if (cls.fields is None) == (cls.exclude is None):
            raise ImproperlyConfigured(
                f"binding {cls.__qualname__} must set one of fields (a list of field names, "
                'or ["__all__"]) and exclude'
            )
        if not cls.stream:
            raise ImproperlyConfigured(
                f"binding {cls.__qualname__} has no stream: set stream to the name its "
                "messages are sent and received on"
            )
        cls.model_label = _label_of(cls.model)
        cls.register()

    # -- the model ---------------------------------------------------------------

    @classmethod
    def get_model(cls) -> type[Model]:
        """The model class (an ``"app_label.ModelName"`` is looked up once apps load)."""
        if isinstance(cls.model, str):
            cls.model = apps.get_model(cls.model)
        if cls.model is None:
            raise ImproperlyConfigured(f"binding {cls.__qualname__} is abstract (model = None)")
        return cls.model

    @classmethod
    def field_names(cls) -> list[str] | None:
        """The bound fields by name, None for all of them."""
        fields = cls.fields
        if fields is not None:
            fields = [fields] if isinstance(fields, str) else list(fields)
            return None if fields == ["__all__"] else fields
        excluded = set(cls.exclude or ())
        meta = cls.get_model()._meta
        return [
            f.name for f in [*meta.concrete_fields, *meta.many_to_many] if f.name not in excluded
        ]

    # -- registration --------------------------------------------------------------

    @classmethod
    def _receivers(cls) -> list[tuple[Any, Any]]:
        return [
            (pre_save, cls.pre_save_receiver),
            (post_save, cls.post_save_receiver),
            (pre_delete, cls.pre_delete_receiver),
            (post_delete, cls.post_delete_receiver),
        ]

    @classmethod
    def _dispatch_uid(cls) -> str:
        return f"geventchannels.binding:{cls.__module__}.{cls.__qualname__}:{id(cls)}"

    @classmethod
    def register(cls) -> None:
        """Connect the model's save and delete signals (done when the class is made)."""
        for signal, receiver in cls._receivers():
            signal.connect(receiver, sender=cls.model, weak=False, dispatch_uid=cls._dispatch_uid())

    @classmethod
    def unregister(cls) -> None:
        """Disconnect them again: the binding sends nothing more."""
        for signal, _ in cls._receivers():
            signal.disconnect(sender=cls.model, dispatch_uid=cls._dispatch_uid())

    # -- outbound --------------------------------------------------------------------

    @classmethod
    def group_names(cls, instance: Model) -> Iterable[str]:
        """The groups that should know about ``instance`` as it is now."""
        raise NotImplementedError(f"{cls.__qualname__} must define group_names(instance)")

    def serialize(self, instance: Model, action: str) -> dict:
        """The payload that tells clients about ``action`` on ``instance``; an empty dict
        sends nothing."""
        raise NotImplementedError(f"{type(self).__qualname__} must define serialize()")

    @classmethod
    def encode(cls, stream: str, payload: Any) -> dict:
        """The channel message that carries ``payload`` on ``stream``."""
        raise NotImplementedError(f"{cls.__qualname__} must define encode(stream, payload)")

    def _groups_of(self, instance: Model) -> set[str]:
        names = self.group_names(instance)
        if isinstance(names, str):
            raise TypeError(
                f"{type(self).__qualname__}.group_names() returned the str {names!r}; "
                "return a list of group names"
            )
        return set(names)

    def _stored_row(self, instance: Model, using: str | None) -> Model | None:
        if instance.pk is None:
            return None
        manager = type(instance)._base_manager
        return manager.using(using).filter(pk=instance.pk).first()

    @classmethod
    def pre_save_receiver(cls, instance: Model, using: str | None = None, **kwargs: Any) -> None:
        self = cls()
        try:
            stored = self._stored_row(instance, using)
            before = set() if stored is None else self._groups_of(stored)
        except Exception:
            logger.exception("binding %s failed before a save of %r", cls.__qualname__, instance)
            return
        instance.__dict__.setdefault(_GROUPS_BEFORE, {})[cls] = before

    @classmethod
    def post_save_receiver(
        cls, instance: Model, created: bool = False, using: str | None = None, **kwargs: Any
    ) -> None:
        self = cls()
        before = instance.__dict__.get(_GROUPS_BEFORE, {}).pop(cls, None)
        if before is None:
            return
        try:
            self.send_changes(instance, before, self._groups_of(instance), using, kwargs)
        except Exception:
            logger.exception("binding %s failed after a save of %r", cls.__qualname__, instance)

    @classmethod
    def pre_delete_receiver(cls, instance: Model, **kwargs: Any) -> None:
        try:
            before = cls()._groups_of(instance)
        except Exception:
            logger.exception("binding %s failed before a delete of %r", cls.__qualname__, instance)
            return
        instance.__dict__.setdefault(_GROUPS_BEFORE, {})[cls] = before

    @classmethod
    def post_delete_receiver(cls, instance: Model, using: str | None = None, **kwargs: Any) -> None:
        before = instance.__dict__.get(_GROUPS_BEFORE, {}).pop(cls, None)
        if before is None:
            return
        try:
            cls().send_changes(instance, before, set(), using, kwargs)
        except Exception:
            logger.exception("binding %s failed after a delete of %r", cls.__qualname__, instance)

    def send_changes(
        self,
        instance: Model,
        before: set[str],
        after: set[str],
        using: str | None,
        signal_kwargs: dict,
    ) -> None:
        """Serialize the change now, send it to the groups when the transaction commits:
        delete to the groups left, update to those kept, create to those joined."""
        self.instance = instance
        self.signal_kwargs = signal_kwargs
        messages: list[tuple[str, dict]] = []
        for action, names in (
            (DELETE, before - after),
            (UPDATE, before & after),
            (CREATE, after - before),
        ):
            if not names:
                continue
            payload = self.serialize(instance, action)
            if payload == {}:
                continue
            message = self.encode(self.stream or "", payload)
            messages.extend((name, message) for name in sorted(names))
        if messages:
            transaction.on_commit(partial(_send_to_groups, messages), using=using)

    # -- inbound ---------------------------------------------------------------------

    @classmethod
    def consumer(cls, message: Message, **kwargs: Any) -> None:
        """The consumer for this binding's stream (put it in a demultiplexer's consumers)."""
        cls.get_handler()(message, **kwargs)

    @classmethod
    def get_handler(cls) -> Any:
        """:meth:`trigger_inbound`, wrapped in the session decorators the flags ask for."""
        handler: Any = cls.trigger_inbound
        if cls.channel_session_user:
            from ..auth import channel_session_user

            return channel_session_user(handler)
        if cls.channel_session:
            from ..sessions import channel_session

            return channel_session(handler)
        return handler

    @classmethod
    def trigger_inbound(cls, message: Message, **kwargs: Any) -> None:
        """Apply one inbound message, or answer why not."""
        self = cls()
        self.message = message
        self.kwargs = kwargs
        self.user = _user_of(message)
        action = pk = None
        try:
            action, pk, data = self.deserialize(message)
            self.action, self.pk, self.data = action, pk, data
            self.run_action(action, pk, data)
        except InboundError as error:
            self.reply_error(action, pk, error)

    def deserialize(self, message: Message) -> tuple[str, Any, Any]:
        """``(action, pk, data)`` from an inbound message; raise :class:`InboundError`
        when it is not one."""
        raise NotImplementedError(f"{type(self).__qualname__} must define deserialize()")

    def has_permission(self, user: Any, action: str, pk: Any) -> bool:
        """May ``user`` (maybe an AnonymousUser) do ``action`` on ``pk`` (None for a
        create)? Nothing is allowed until a binding says so."""
        return False

    def run_action(self, action: str, pk: Any, data: Any) -> None:
        """Check the action and the permission, then apply it in one transaction."""
        if action not in ACTIONS:
            raise InboundError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
        if action != CREATE and pk is None:
            raise InboundError(f"{action} needs a pk")
        if not self.has_permission(self.user, action, pk):
            raise InboundError("permission denied")
        model = self.get_model()
        with transaction.atomic(using=router.db_for_write(model)):
            if action == CREATE:
                self.create(data)
            elif action == UPDATE:
                self.update(pk, data)
            else:
                self.delete(pk)

    def create(self, data: Any) -> None:
        raise NotImplementedError(f"{type(self).__qualname__} must define create(data)")

    def update(self, pk: Any, data: Any) -> None:
        raise NotImplementedError(f"{type(self).__qualname__} must define update(pk, data)")

    def delete(self, pk: Any) -> None:
        """Delete the row ``pk`` (its delete is then sent to its groups)."""
        instance = self.get_model()._default_manager.filter(pk=pk).first()
        if instance is None:
            raise InboundError("not found")
        instance.delete()

    def reply_error(self, action: str | None, pk: Any, error: InboundError) -> None:
        """Tell the sender why its message was not applied, on this binding's stream."""
        payload: dict[str, Any] = {"action": action, "pk": pk, "error": error.error}
        if error.errors:
            payload["errors"] = error.errors
        multiplexer = self.kwargs.get("multiplexer")
        if multiplexer is not None:
            multiplexer.send(payload)
        elif self.message.reply_channel is not None:
            self.message.reply_channel.send(self.encode(self.stream or "", payload))


def _label_of(model: type[Model] | str) -> str:
    if isinstance(model, str):
        app_label, _, name = model.rpartition(".")
        return f"{app_label}.{name}".lower()
    return f"{model._meta.app_label}.{model._meta.object_name}".lower()


def _send_to_groups(messages: list[tuple[str, dict]]) -> None:
    for name, message in messages:
        try:
            Group(name).send(message)
        except Exception:
            logger.exception("a binding could not send to group %r", name)


def _user_of(message: Message) -> Any:
    user = getattr(message, "user", None)
    if user is None and apps.is_installed("django.contrib.auth"):
        from django.contrib.auth.models import AnonymousUser

        user = AnonymousUser()
    return user
