"""The project's own tests, written against Channels 1.x's test helpers."""

import json

from channels import Channel, Group
from channels.binding.base import CREATE
from channels.routing import route
from channels.signals import consumer_finished
from channels.test import ChannelTestCase, Client, HttpClient, WSClient, apply_routes
from django.contrib.auth.models import User

from .models import Note, Room


def square(message):
    Channel("result").send({"value": message["value"] ** 2})


class RoomTests(ChannelTestCase):
    def connect(self, client, room="lobby"):
        client.set_header("origin", "http://testserver")
        client.send_and_consume("websocket.connect", path="/chat/%s/" % room)

    def test_logged_in_user_joins_and_talks(self):
        User.objects.create_user("ann", password="secret")
        client = WSClient()
        self.assertTrue(client.login(username="ann", password="secret"))
        self.connect(client)
        self.assertEqual(client.receive(), {"joined": "ann"})

        client.send_and_consume("websocket.receive", text="hello", path="/chat/lobby/")
        self.assertEqual(client.receive(), {"user": "ann", "text": "hello"})
        self.assertIsNone(client.receive())

    def test_anonymous_visitor(self):
        client = WSClient()
        self.connect(client, "kitchen")
        self.assertEqual(client.receive(), {"joined": ""})

    def test_other_origins_are_refused(self):
        client = WSClient()
        client.set_header("origin", "http://evil.example")
        with self.assertRaisesRegex(AssertionError, "Connection rejected"):
            client.send_and_consume("websocket.connect", path="/chat/lobby/")

    def test_room_members_get_the_group_and_leave_it(self):
        listener = Client()
        listener.join_group("room-lobby")
        client = WSClient()
        self.connect(client)
        self.assertEqual(json.loads(listener.receive()["text"]), {"joined": ""})
        self.assertEqual(client.receive(), {"joined": ""})
        client.send_and_consume("websocket.disconnect", path="/chat/lobby/")
        Group("room-lobby").send({"text": "after"})
        self.assertIsNone(client.receive())
        self.assertEqual(listener.receive(), {"text": "after"})


class EchoTests(ChannelTestCase):
    def test_generic_consumer(self):
        user = User.objects.create_user("bob")
        client = HttpClient()
        client.force_login(user)
        client.send_and_consume("websocket.connect", path="/echo/")
        self.assertIsNone(client.receive())

        client.send_and_consume("websocket.receive", {"text": json.dumps({"n": 1})}, path="/echo/")
        self.assertEqual(client.receive(), {"echo": {"n": 1}, "user": "bob"})

        Group("echoes").send({"text": json.dumps("to everyone")}, immediately=True)
        self.assertEqual(client.receive(), "to everyone")


class BindingTests(ChannelTestCase):
    def setUp(self):
        self.room = Room.objects.create(name="lobby")

    def test_outbound_create(self):
        client = HttpClient()
        client.join_group("notes-lobby")
        note = Note.objects.create(room=self.room, text="first")
        consumer_finished.send(sender=None)

        received = client.receive()
        self.assertEqual(received["stream"], "notes")
        payload = received["payload"]
        self.assertEqual(payload["action"], "create")
        self.assertEqual(payload["model"], "chat.note")
        self.assertEqual(payload["pk"], note.pk)
        self.assertEqual(payload["data"], {"room": self.room.pk, "text": "first"})
        self.assertIsNone(client.receive())

    def test_inbound_create_by_a_user(self):
        client = HttpClient()
        client.force_login(User.objects.create_user("carol"))
        client.send_and_consume("websocket.connect", path="/notes/lobby/")
        client.send_and_consume(
            "websocket.receive",
            path="/notes/lobby/",
            text={
                "stream": "notes",
                "payload": {"action": CREATE, "data": {"room": self.room.pk, "text": "hi"}},
            },
        )
        self.assertEqual(Note.objects.get().text, "hi")
        self.assertEqual(client.receive()["payload"]["action"], "create")

    def test_inbound_refused_for_anonymous(self):
        client = HttpClient()
        client.send_and_consume("websocket.connect", path="/notes/lobby/")
        client.send_and_consume(
            "websocket.receive",
            path="/notes/lobby/",
            text={"stream": "notes", "payload": {"action": CREATE, "data": {"text": "x"}}},
        )
        self.assertEqual(Note.objects.count(), 0)
        self.assertEqual(client.receive()["stream"], "notes")


class PlainChannelTests(ChannelTestCase):
    @apply_routes([route("input", square)])
    def test_consumer_on_a_channel_of_its_own(self):
        Channel("input").send({"value": 33})
        square(self.get_next_message("input", require=True))
        self.assertEqual(self.get_next_message("result", require=True)["value"], 1089)

        client = Client()
        client.send_and_consume("input", {"value": 4})
        self.assertEqual(self.get_next_message("result", require=True)["value"], 16)
