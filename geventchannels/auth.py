"""``message.user`` for consumers, from the site's own login, and sockets that end with it.

A socket is authenticated on ``websocket.connect`` from the browser's HTTP session (its
cookie); ``channel_session_user_from_http`` copies the login into the socket's channel
session, and ``channel_session_user`` gives every later message ``message.user`` from there.
Django's session auth hash is checked as for a browser's request, so a password change
logs the socket's user out too.

The user is kept with the cached channel session (see :mod:`geventchannels.sessions`), so
a socket's frames do not query the database; it is loaded again when the user is saved or
deleted in this process, or the session's login changes.

Beyond Channels 1.x: a socket authenticated from HTTP session K joins a group named after
a hash of K. When K logs out (``user_logged_out``) or is deleted from a database-backed
store (flush, key change, expiry clean-up), that group is sent ``{"close": 4001}``, which
closes K's sockets in every process sharing the channel layer: a stolen session cookie does
not keep a socket alive after its owner logs out.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user
from django.contrib.sessions.backends.base import SessionBase

from .sessions import (
    CHANNEL_SESSION_PREFIX,
    Consumer,
    channel_and_http_session,
    channel_session,
    find_message,
    http_session,
    with_channel_session,
)

logger = logging.getLogger(__name__)

#: The close code of a socket whose login ended.
LOGOUT_CLOSE_CODE = 4001
#: Channel session key holding ``[group, renew at]``: the logout group the socket is in, and
#: when (Unix time) to renew the membership, half its ``group_expiry`` after joining.
LOGOUT_GROUP_KEY = "__geventchannels_logout_group"
#: Where a channel session keeps the user it was checked against (not a session key: an
#: attribute of the cached session object, so it lives exactly as long as that copy).
_USER_ATTRIBUTE = "_geventchannels_user"
_AUTH_KEYS = (SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY)

#: pk (as the session stores it) -> how often that user was saved or deleted here; a
#: cached user is used only while its count is unchanged.
_user_versions: dict[str, int] = {}
_USER_VERSIONS_LIMIT = 100_000
#: Bumped when _user_versions is cleared (it reached its limit): every cached user is stale.
_epoch = 0


def _anonymous() -> Any:
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()


def transfer_user(from_session: SessionBase, to_session: SessionBase) -> None:
    """Copy the login (user id, backend, auth hash) of one session into another."""
    if all(key in from_session for key in _AUTH_KEYS):
        for key in _AUTH_KEYS:
            if to_session.get(key) != from_session[key]:
                to_session[key] = from_session[key]


def logout_group_name(http_session_key: str) -> str:
    """The group of the sockets authenticated from an HTTP session: a hash, since the
    key itself is a credential and group names are visible in the layer's store."""
    digest = hashlib.sha256(("geventchannels.logout:" + http_session_key).encode()).hexdigest()
    return "geventchannels.login." + digest[:48]


# -- the user of a channel session -----------------------------------------------------------


def user_of_channel_session(session: SessionBase) -> Any:
    """The user logged in the channel session, or an AnonymousUser. Checked like a
    browser's request (the auth hash); a failed check logs the socket out: the login keys
    leave the channel session, the rest of it stays."""
    return _user_of(session, _data(session))


def _user_of(session: SessionBase, data: dict) -> Any:
    user_id = data.get(SESSION_KEY)
    if user_id is None:
        return _anonymous()
    cached = session.__dict__.get(_USER_ATTRIBUTE)
    if cached is not None and cached[0] == _identity(data, user_id):
        return cached[1]
    login = _Login.of(session)
    user = get_user(login)  # type: ignore[arg-type]
    if login.flushed:
        for key in _AUTH_KEYS:
            session.pop(key, None)
    elif login.get(HASH_SESSION_KEY) != session.get(HASH_SESSION_KEY):
        session[HASH_SESSION_KEY] = login[HASH_SESSION_KEY]  # verified with an old secret
    if user.is_authenticated:
        remember_user(session, user)
    return user


class _Login(dict):
    """The login keys of a session, as django.contrib.auth.get_user sees a request:
    ``flush()`` (a failed check) and ``cycle_key()`` are only noted. A channel session
    keeps its key and its other data; a browser's session is never changed by a socket
    (the browser's next request does what Django does)."""

    flushed = False

    @classmethod
    def of(cls, session: SessionBase) -> _Login:
        return cls({key: session[key] for key in _AUTH_KEYS if key in session})

    @property
    def session(self) -> _Login:
        return self

    def flush(self) -> None:
        self.flushed = True
        self.clear()

    def cycle_key(self) -> None:
        pass


def remember_user(session: SessionBase, user: Any) -> None:
    """Keep ``user`` as the checked user of the session's current login."""
    data = _data(session)
    user_id = data.get(SESSION_KEY)
    if user_id is not None:
        session.__dict__[_USER_ATTRIBUTE] = (_identity(data, user_id), user)


def _data(session: SessionBase) -> dict:
    """The session's loaded dict (Django's ``SessionBase._session``, which Channels 1.x
    used too): read on every frame, so without the layers of ``get()``."""
    return session._session  # type: ignore[attr-defined]


def _identity(data: dict, user_id: Any) -> tuple:
    """What a cached user was checked against: the login, and how often the user changed."""
    return (
        user_id,
        data.get(BACKEND_SESSION_KEY),
        data.get(HASH_SESSION_KEY),
        _user_versions.get(user_id if type(user_id) is str else str(user_id), 0),
        _epoch,
    )


def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    global _epoch
    if len(_user_versions) >= _USER_VERSIONS_LIMIT:
        _user_versions.clear()
        _epoch += 1
    key = str(instance.pk)
    _user_versions[key] = _user_versions.get(key, 0) + 1


# -- decorators ------------------------------------------------------------------------------


def channel_session_user(func: Consumer) -> Consumer:
    """``message.user`` from the login kept in the channel session (and
    ``message.channel_session``)."""
    return with_channel_session(func, _set_user)


def _set_user(message: Any) -> None:
    """``channel_session_user``'s part of every frame, inside channel_session's load and
    save: the cached user costs a few reads of the session's dict."""
    session = message.channel_session
    data = _data(session)
    message.user = _user_of(session, data)
    membership = data.get(LOGOUT_GROUP_KEY)
    if membership:
        if message.channel_name == "websocket.disconnect":
            _leave_group(message, membership[0])
        elif membership[1] < time.time():
            _join_group(message, session, membership[0])


def http_session_user(func: Consumer) -> Consumer:
    """``message.user`` from the HTTP session of the message (``message.http_session``);
    an AnonymousUser without one. On ``websocket.connect`` an authenticated socket joins
    its session's logout group."""

    @http_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args)
        session = message.http_session  # type: ignore[attr-defined]
        user = _anonymous() if session is None else get_user(_Login.of(session))  # type: ignore[arg-type]
        message.user = user  # type: ignore[attr-defined]
        if (
            user.is_authenticated
            and message.channel_name == "websocket.connect"
            and message.reply_channel is not None
            and session is not None
            and session.session_key
        ):
            group = logout_group_name(session.session_key)
            message.channel_layer.group_add(group, message.reply_channel.name)
            message.__dict__["_logout_group"] = group
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def _from_http(func: Consumer) -> Consumer:
    """The part the two ``..._user_from_http`` decorators share: copy the HTTP session's
    login into the channel session, with the logout group it joined."""

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args)
        session = message.channel_session  # type: ignore[attr-defined]
        if message.http_session is not None:  # type: ignore[attr-defined]
            transfer_user(message.http_session, session)  # type: ignore[attr-defined]
            if message.user.is_authenticated:  # type: ignore[attr-defined]
                remember_user(session, message.user)  # type: ignore[attr-defined]
        group = message.__dict__.get("_logout_group")
        if group and (session.get(LOGOUT_GROUP_KEY) or [None])[0] != group:
            _note_membership(message, session, group)
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def channel_session_user_from_http(func: Consumer) -> Consumer:
    """For ``websocket.connect``: the user of the HTTP session becomes the socket's
    (copied into the channel session, read by ``channel_session_user`` on later messages);
    ``message.user``, ``message.http_session`` and ``message.channel_session`` are set."""
    return http_session_user(channel_session(_from_http(func)))


def channel_and_http_session_user_from_http(func: Consumer) -> Consumer:
    """As ``channel_session_user_from_http``, and ``message.http_session`` stays
    available on the socket's later messages (``channel_and_http_session``)."""
    return http_session_user(channel_and_http_session(_from_http(func)))


# -- the logout group ------------------------------------------------------------------------


def _note_membership(message: Any, session: SessionBase, group: str) -> None:
    """Group memberships expire (``group_expiry``): a socket open for longer renews its
    half-way."""
    expiry = getattr(message.channel_layer, "group_expiry", 86400)
    session[LOGOUT_GROUP_KEY] = [group, int(time.time()) + expiry // 2]


def _join_group(message: Any, session: SessionBase, group: str) -> None:
    if message.reply_channel is not None:
        message.channel_layer.group_add(group, message.reply_channel.name)
        _note_membership(message, session, group)


def _leave_group(message: Any, group: str) -> None:
    if message.reply_channel is not None:
        try:
            message.channel_layer.group_discard(group, message.reply_channel.name)
        except Exception:
            logger.exception("could not leave the logout group of %s", message.reply_channel)


def close_sockets_of_session(http_session_key: str | None) -> None:
    """Close, with 4001, the sockets authenticated from an HTTP session, in every process."""
    if not http_session_key or http_session_key.startswith(CHANNEL_SESSION_PREFIX):
        return
    from .channel import Group

    try:
        Group(logout_group_name(http_session_key)).send({"close": LOGOUT_CLOSE_CODE})
    except Exception:
        logger.exception("could not close the sockets of a session that logged out")


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    if session is not None:
        close_sockets_of_session(session.session_key)


def _session_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    close_sockets_of_session(instance.session_key)


def connect_signals() -> None:
    """Connect the receivers that close sockets on logout and keep cached users fresh
    (called when the app is ready, in every process)."""
    from django.apps import apps
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_delete, post_save

    user_logged_out.connect(_logged_out, dispatch_uid="geventchannels.auth.logged_out")
    if apps.is_installed("django.contrib.auth"):
        from django.contrib.auth import get_user_model

        model = get_user_model()
        post_save.connect(_user_changed, sender=model, dispatch_uid="geventchannels.auth.saved")
        post_delete.connect(_user_changed, sender=model, dispatch_uid="geventchannels.auth.gone")
    store = getattr(import_module(settings.SESSION_ENGINE), "SessionStore", None)
    model_of = getattr(store, "get_model_class", None)
    if model_of is not None and apps.is_installed("django.contrib.sessions"):
        post_delete.connect(
            _session_deleted, sender=model_of(), dispatch_uid="geventchannels.auth.session_gone"
        )
