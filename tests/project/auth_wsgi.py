"""WSGI entry of the session and auth test servers (``geventchannels serve``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.auth_settings")

application = get_wsgi_application()
