"""Management commands (runserver, runworker) and how they take over Django's runserver.

Django picks a command from the first app in INSTALLED_APPS that provides it, so
``geventchannels`` listed before ``django.contrib.staticfiles`` wins on its own. When it
is listed after, :func:`replace_staticfiles_runserver` (called from the app's ``ready()``)
makes staticfiles' ``runserver`` ours as well, so the order does not matter.

Nothing is imported here at module level: ``bootstrap`` must run before Django loads.
"""

from __future__ import annotations


def replace_staticfiles_runserver() -> None:
    """Serve ``runserver`` with geventchannels' command even when Django resolves it to
    ``django.contrib.staticfiles`` (which is listed earlier in INSTALLED_APPS)."""
    from django.apps import apps

    names = [config.name for config in apps.get_app_configs()]
    staticfiles = "django.contrib.staticfiles"
    if staticfiles not in names or names.index(staticfiles) > names.index("geventchannels"):
        return
    from django.contrib.staticfiles.management.commands import runserver as staticfiles_runserver

    from .commands.runserver import Command

    staticfiles_runserver.Command = Command  # type: ignore[misc, assignment]
