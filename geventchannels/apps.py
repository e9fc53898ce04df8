"""The Django app: ``"geventchannels"`` in INSTALLED_APPS."""

from django.apps import AppConfig


class GeventChannelsConfig(AppConfig):
    name = "geventchannels"
    verbose_name = "geventchannels"

    def ready(self) -> None:
        from .checks import register

        register()

        from .management import replace_staticfiles_runserver

        replace_staticfiles_runserver()

        from .auth import connect_signals

        connect_signals()
