from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        # Bindings connect their model signals when their class is made.
        from . import bindings  # noqa: F401
