"""A browser for the session and auth tests: an HTTP client with cookies that logs in and
out through Django's own views (real POSTs with the CSRF token), and opens WebSockets with
its session cookie."""

from __future__ import annotations

import json
import re
import secrets

import httpx
import websocket

#: The password of every user the auth tests create.
PASSWORD = "correct horse"
#: Their password hasher: fast, and the one the test servers' settings know.
HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def new_user():
    """A user with a fresh name and PASSWORD."""
    from django.contrib.auth.models import User
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=HASHERS):
        return User.objects.create_user("user-" + secrets.token_hex(4), password=PASSWORD)


class Browser:
    def __init__(self, url: str, ws_url: str | None = None) -> None:
        self.url = url
        self.ws_url = ws_url or "ws" + url[len("http") :]
        self.http = httpx.Client(base_url=url, timeout=15)

    def _form_token(self, path: str) -> str:
        page = self.http.get(path)
        assert page.status_code == 200, page.text[:300]
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert found, page.text[:300]
        return found.group(1)

    def log_in(self, user) -> Browser:
        token = self._form_token("/accounts/login/")
        response = self.http.post(
            "/accounts/login/",
            data={"username": user.username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
        assert response.status_code == 302, response.text[:500]
        assert self.session_key
        return self

    def log_out(self) -> None:
        response = self.http.post(
            "/accounts/logout/", data={"csrfmiddlewaretoken": self.http.cookies["csrftoken"]}
        )
        assert response.status_code == 302, response.text[:500]

    def who(self) -> str:
        """The username the site sees for this browser ("-": not logged in)."""
        return self.http.get("/accounts/user/").text

    @property
    def session_key(self) -> str | None:
        return self.http.cookies.get("sessionid")

    def socket(self, path: str = "/whoami/", cookie: str | None = None, ws_url: str | None = None):
        """A WebSocket with this browser's session cookie (or ``cookie``), to this site or
        to ``ws_url`` (another server of the same site)."""
        key = cookie if cookie is not None else self.session_key
        return websocket.create_connection(
            (ws_url or self.ws_url) + path,
            timeout=15,
            cookie=f"sessionid={key}" if key else None,
        )


def ask(ws: websocket.WebSocket) -> dict:
    """One frame to /whoami/ and its answer."""
    ws.send("who?")
    return json.loads(ws.recv())
