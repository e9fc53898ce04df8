"""WSClient: a WebSocket (or HTTP) client for consumers under test, with cookies, headers,
a logged-in session and the ``order`` of frames numbered for you.

The messages it sends are shaped as the server's: ``websocket.connect`` (and
``http.request``) carry the headers, cookies and ``query_string`` (bytes); later frames
carry ``path``, ``order`` and ``text`` or ``bytes``.
"""

from __future__ import annotations

import json as json_module
from collections import deque
from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from .. import DEFAULT_CHANNEL_LAYER
from .base import Client

#: Channels whose messages carry the request's headers, as the server sends them.
REQUEST_CHANNELS = ("websocket.connect", "http.request")


class WSClient(Client):
    """``client.send_and_consume("websocket.connect", path="/chat/")`` then
    ``client.send_and_consume("websocket.receive", text={"message": "hi"})`` and
    ``client.receive()`` for the decoded reply.

    With ``ordered`` (the default) the ``order`` of ``websocket.*`` messages is numbered
    as the server numbers it (connect 0, then 1, 2, ...) unless the content gives one.
    """

    def __init__(self, alias: str = DEFAULT_CHANNEL_LAYER, ordered: bool = True):
        super().__init__(alias)
        self.ordered = ordered
        #: The ``order`` the next websocket message gets.
        self.order = 0
        #: The path of the last connect, used when a later send gives none.
        self.path = "/"
        self._headers: dict[str, str | bytes] = {"host": "testserver"}
        self._cookies: dict[str, str] = {}
        self._session: Any = None
        self._kept: deque[dict] = deque()

    # -- what the client sends -------------------------------------------------------

    def set_cookie(self, key: str, value: str) -> None:
        self._cookies[key] = value

    def set_header(self, key: str, value: str | bytes) -> None:
        """Set a request header (not ``cookie``: use :meth:`set_cookie`)."""
        key = key.lower()
        if key == "cookie":
            raise ValueError("use set_cookie() for cookies, not the cookie header")
        self._headers[key] = value

    def get_cookies(self) -> dict[str, str]:
        """The cookies sent on connect: those set, plus the session's once it exists."""
        cookies = dict(self._cookies)
        if self._session is not None and self._session.session_key:
            cookies[settings.SESSION_COOKIE_NAME] = self._session.session_key
        return cookies

    @property
    def headers(self) -> list[list[bytes]]:
        """The headers of a connect message, as ASGI lists ``[name, value]`` of bytes."""
        headers = [[name.encode("latin-1"), _bytes(value)] for name, value in self._headers.items()]
        cookies = self.get_cookies()
        if cookies:
            jar: SimpleCookie = SimpleCookie()
            for key, value in cookies.items():
                jar[key] = value
            headers.append([b"cookie", jar.output(header="", sep=";").strip().encode("latin-1")])
        return headers

    def send(
        self,
        to: str,
        content: dict | None = None,
        text: Any = None,
        path: str | None = None,
    ) -> None:
        """Send a message to channel ``to``; ``text`` that is not a str is sent as JSON.
        ``path`` may carry a query string (used on connect)."""
        self.channel_layer.channel_layer.send(to, self._content(to, content, text, path))

    def _content(self, to: str, content: dict | None, text: Any, path: str | None) -> dict:
        content = dict(content or {})
        content.setdefault("reply_channel", self.reply_channel)
        if path is None:
            path = self.path
        path, _, query = path.partition("?")
        content.setdefault("path", path)
        if to in REQUEST_CHANNELS:
            if to == "websocket.connect":
                self.path = path
            content.setdefault("query_string", query.encode("latin-1"))
            content.setdefault("headers", self.headers)
            content.setdefault("scheme", "ws" if to == "websocket.connect" else "http")
            content.setdefault("root_path", "")
            content.setdefault("client", ["127.0.0.1", 50000])
            content.setdefault("server", ["testserver", 80])
        if to == "http.request":
            content.setdefault("method", "GET")
            content.setdefault("http_version", "1.1")
            content.setdefault("body", b"")
        if self.ordered and to.startswith("websocket."):
            if to == "websocket.connect":
                self.order = 0
            content.setdefault("order", self.order)
            self.order = content["order"] + 1
        if to == "websocket.disconnect":
            content.setdefault("code", 1000)
        if text is None:
            text = content.get("text")
        if text is not None:
            content["text"] = text if isinstance(text, str) else json_module.dumps(text)
        return content

    # -- what the consumers answer ------------------------------------------------------

    def receive(self, json: bool = True) -> Any:
        """The next reply: its ``text`` decoded from JSON (``json=False``: as a str), or
        the whole content when it has no text; None when nothing was sent."""
        content = self._kept.popleft() if self._kept else super().receive()
        if content is None:
            return None
        text = content.get("text")
        if json and isinstance(text, str):
            return json_module.loads(text)
        return content.get("text", content)

    def consume(self, channel: str, fail_on_none: bool = True, check_accept: bool = True) -> Any:
        """Run the consumer of the next message on ``channel``. After a connect, with
        ``check_accept``, fail unless the consumer accepted (an explicit accept, or a
        first text or bytes frame, which is kept for :meth:`receive`)."""
        result = super().consume(channel, fail_on_none=fail_on_none)
        if channel == "websocket.connect" and check_accept:
            from ..server.handshake import accepts, is_decision

            reply = super().receive()
            if reply is None or not (is_decision(reply) and accepts(reply)):
                raise AssertionError(
                    f"Connection rejected: the consumer answered {reply!r}, not {{'accept': True}}"
                )
            frame = {k: v for k, v in reply.items() if k != "accept"}
            if frame:
                self._kept.append(frame)
        return result

    def send_and_consume(  # type: ignore[override]
        self,
        channel: str,
        content: dict | None = None,
        text: Any = None,
        path: str | None = None,
        fail_on_none: bool = True,
        check_accept: bool = True,
    ) -> Any:
        self.send(channel, content, text, path)
        return self.consume(channel, fail_on_none=fail_on_none, check_accept=check_accept)

    # -- the site's session and login ----------------------------------------------------

    @property
    def session(self) -> Any:
        """The client's HTTP session (saved, so it has a key); its cookie goes with
        every connect. ``login`` and ``force_login`` log the user in to it."""
        if not apps.is_installed("django.contrib.sessions"):
            raise ImproperlyConfigured(
                "WSClient.session needs 'django.contrib.sessions' in INSTALLED_APPS"
            )
        if self._session is None:
            engine = import_module(settings.SESSION_ENGINE)
            session = engine.SessionStore()
            session.save()
            self._session = session
        return self._session

    def login(self, **credentials: Any) -> bool:
        """Log in with ``credentials`` (``username=..., password=...``) as the site's
        login would; False when they are wrong or the user is inactive."""
        from django.contrib.auth import authenticate

        user = authenticate(**credentials)
        if user is None or not user.is_active or not apps.is_installed("django.contrib.sessions"):
            return False
        self._login(user, getattr(user, "backend", None))
        return True

    def force_login(self, user: Any, backend: str | None = None) -> None:
        """Log ``user`` in without credentials (``backend``: the first configured one)."""
        if backend is None:
            backend = settings.AUTHENTICATION_BACKENDS[0]
        user.backend = backend
        self._login(user, backend)

    def logout(self) -> None:
        """Log out of the session as the site's logout view does."""
        from django.contrib.auth import get_user, logout

        request = self._request()
        request.user = get_user(request)
        logout(request)

    def _login(self, user: Any, backend: str | None) -> None:
        from django.contrib.auth import login

        request = self._request()
        login(request, user, backend)
        request.session.save()

    def _request(self) -> HttpRequest:
        request = HttpRequest()
        request.session = self.session
        return request


#: The 1.x name of WSClient.
HttpClient = WSClient


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")
