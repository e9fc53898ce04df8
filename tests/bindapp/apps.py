from django.apps import AppConfig


class BindAppConfig(AppConfig):
    """The test suite's models for data binding; its bindings load with the app."""

    name = "tests.bindapp"
    label = "bindapp"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import bindings  # noqa: F401
