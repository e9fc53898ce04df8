"""Create the SQLite database the /db/ view reads, and the logged-in users of ws_echo_auth
(database sessions, written next to the database as ``<db>.sessions.json``): run once before
the servers start."""

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.core.management import call_command  # noqa: E402

#: Logged-in users for ws_echo_auth: one per socket of the full run.
LOGGED_IN = 50

call_command("migrate", verbosity=0, interactive=False)
User.objects.get_or_create(pk=1, defaults={"username": "bench"})

logins = []
for number in range(LOGGED_IN):
    user, _ = User.objects.get_or_create(username=f"bench-user-{number}")
    # What django.contrib.auth.login() leaves in the browser's session.
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    logins.append({"username": user.username, "cookie": f"sessionid={session.session_key}"})
with open(os.environ["BENCH_DB"] + ".sessions.json", "w") as file:
    json.dump(logins, file)
