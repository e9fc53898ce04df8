"""Settings of the demo chat: in-process channel layer, SQLite, no Redis needed.

Set DEMO_REDIS_URL=redis://127.0.0.1:6379/0 to run it on the Redis layer instead, and
DEMO_DB_PATH=/some/file.sqlite3 to keep its database elsewhere (the browser test does).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "geventchannels",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "chat",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB_PATH") or BASE_DIR / "db.sqlite3",
    }
}
USE_TZ = True
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_redis_url = os.environ.get("DEMO_REDIS_URL")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": (
            "geventchannels.layers.RedisChannelLayer"
            if _redis_url
            else "geventchannels.layers.InMemoryChannelLayer"
        ),
        "ROUTING": "demo.routing.channel_routing",
        "CONFIG": {"hosts": [_redis_url]} if _redis_url else {},
    }
}
