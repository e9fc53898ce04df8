"""The chat's messages as a data binding: clients create them on the "messages" stream, and
every save reaches every tab (the group "chat") as a "create"."""

from geventchannels.binding.websockets import WebsocketBinding

ROOM = "chat"


class MessageBinding(WebsocketBinding):
    model = "chat.Message"
    stream = "messages"
    fields = ["text", "created"]
    # No logins in the demo: the binding needs no user, so no channel session either.
    channel_session_user = False

    @classmethod
    def group_names(cls, instance):
        return [ROOM]

    def has_permission(self, user, action, pk):
        """Anyone may post; nobody may edit or delete."""
        return action == "create"
