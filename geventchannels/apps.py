"""The Django app: ``"geventchannels"`` in INSTALLED_APPS."""

from django.apps import AppConfig


class GeventChannelsConfig(AppConfig):
    name = "geventchannels"
    verbose_name = "geventchannels"

    def ready(self) -> None:
        from django.core import checks

        from .checks import check_gevent_patched

        checks.register(check_gevent_patched, "geventchannels")

        from .management import replace_staticfiles_runserver

        replace_staticfiles_runserver()
