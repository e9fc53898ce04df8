"""Bindings of the test models, and the demultiplexer that carries them."""

from geventchannels.binding.websockets import WebsocketBinding
from geventchannels.generic.websockets import WebsocketDemultiplexer


class ItemBinding(WebsocketBinding):
    model = "bindapp.Item"
    stream = "items"
    fields = ["name", "price", "room", "tags"]
    #: What the tests allow clients to do, and whether only logged-in users may (changed by
    #: the tests).
    allowed: set[str] = {"create", "update", "delete"}
    login_required = False

    @classmethod
    def group_names(cls, instance):
        return ["items-" + instance.room]

    def has_permission(self, user, action, pk):
        return action in self.allowed and (user.is_authenticated or not self.login_required)


class Items(WebsocketDemultiplexer):
    consumers = {"items": ItemBinding.consumer}

    def connection_groups(self, room, **kwargs):
        return ["items-" + room]
