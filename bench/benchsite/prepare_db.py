"""Create the SQLite database the /db/ view reads: run once before the servers start."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0, interactive=False)
User.objects.get_or_create(pk=1, defaults={"username": "bench"})
