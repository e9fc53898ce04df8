from channels.binding.websockets import WebsocketBinding
from channels.generic.websockets import WebsocketDemultiplexer

from .models import Note


class NoteBinding(WebsocketBinding):
    model = Note
    stream = "notes"
    fields = ["room", "text"]

    @classmethod
    def group_names(cls, instance):
        return ["notes-" + instance.room.name]

    def has_permission(self, user, action, pk):
        return user.is_authenticated


class NotesDemultiplexer(WebsocketDemultiplexer):
    http_user = True
    consumers = {"notes": NoteBinding.consumer}

    def connection_groups(self, room, **kwargs):
        return ["notes-" + room]
