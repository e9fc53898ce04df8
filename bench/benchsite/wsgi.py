"""WSGI entry for gunicorn (``-k gevent`` for the Django anchor, the geventchannels worker)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
