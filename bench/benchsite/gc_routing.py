"""geventchannels consumers for the WebSocket, broadcast and long-poll workloads.

Plain sync functions, Channels 1.x style; the logged-in echo uses the session and auth
decorators; the task consumer is in tasks.py. /hello/, /db/ and /task/ are not routed, so
they take the server's WSGI fast path straight into Django.
"""

from benchsite.delays import DELAYED, fired
from benchsite.tasks import TASKS, run_task
from geventchannels import Group
from geventchannels.auth import channel_session_user, channel_session_user_from_http
from geventchannels.routing import route

OK_HEADERS = [[b"content-type", b"text/plain"]]


def echo(message):
    message.reply_channel.send({"text": message["text"]})


@channel_session_user_from_http
def accept_user(message):
    message.reply_channel.send({"accept": True})


@channel_session_user
def echo_user(message):
    message.reply_channel.send({"text": message.user.username})


@channel_session_user
def forget_user(message):
    pass


def join(message):
    Group("bench").add(message.reply_channel)
    message.reply_channel.send({"accept": True})


def leave(message):
    Group("bench").discard(message.reply_channel)


def fan_out(message):
    Group("bench").send({"text": message["text"]})


def park(message):
    Group("poll").add(message.reply_channel)


def poll_count(message):
    count = len(message.channel_layer.group_channels("poll"))
    message.reply_channel.send({"status": 200, "headers": OK_HEADERS, "content": b"%d" % count})


def fire(message):
    Group("poll").send({"status": 200, "headers": OK_HEADERS, "content": b"fired"})
    message.reply_channel.send({"status": 200, "headers": OK_HEADERS, "content": b"ok"})


channel_routing = [
    route("websocket.receive", echo, path=r"^/echo/$"),
    route("websocket.connect", accept_user, path=r"^/echo-auth/$"),
    route("websocket.receive", echo_user, path=r"^/echo-auth/$"),
    route("websocket.disconnect", forget_user, path=r"^/echo-auth/$"),
    route("websocket.connect", join, path=r"^/broadcast/$"),
    route("websocket.disconnect", leave, path=r"^/broadcast/$"),
    route("websocket.receive", fan_out, path=r"^/send/$"),
    route("http.request", park, path=r"^/poll/$"),
    route("http.request", poll_count, path=r"^/poll-count/$"),
    route("http.request", fire, path=r"^/fire/$"),
    route(TASKS, run_task),
    route(DELAYED, fired),
]
