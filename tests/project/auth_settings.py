"""Settings of the session and auth tests: the test project plus logins (middleware, login
template), a SQLite file shared by every process (``GC_TEST_DB``), and the Redis layer when
``GC_TEST_REDIS_URL`` is set (the multi-process tests start servers with these settings).
``GC_TEST_GEVENTCHANNELS`` (JSON) is merged into GEVENTCHANNELS."""

import json
import os
from pathlib import Path

from tests.dbfile import connect_skip_fsync

from .settings import *  # noqa: F403

connect_skip_fsync()

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).resolve().parent / "templates"],
    }
]
LOGIN_REDIRECT_URL = "/hello/"
LOGOUT_REDIRECT_URL = "/hello/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # tests/browser.py's

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("GC_TEST_DB", ":memory:"),
    }
}
if os.environ.get("GC_TEST_REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "geventchannels.layers.RedisChannelLayer",
            "ROUTING": "tests.project.auth_routing.channel_routing",
            "CONFIG": {"hosts": [os.environ["GC_TEST_REDIS_URL"]], "capacity": 2000},
        }
    }
GEVENTCHANNELS = json.loads(os.environ.get("GC_TEST_GEVENTCHANNELS", "{}"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
