"""Exceptions of the Channels 1.x model, plus the channel layer's own."""


class ChannelFull(Exception):
    """The channel already holds as many messages as its capacity allows."""


class MessageTooLarge(Exception):
    """The message is larger than the layer accepts (1 MB by default)."""


class InvalidChannelName(TypeError):
    """A channel or group name does not follow the ASGI naming rules."""


class ChannelLayerUnavailable(ConnectionError):
    """The channel layer's backing store (Redis) cannot be reached right now."""


class ConsumeLater(Exception):
    """Raised by a consumer to put the message back and handle it later."""


class ResponseLater(Exception):
    """Raised by a view to say the response will be sent later on the reply channel."""


class RequestTimeout(Exception):
    """The request body did not arrive in time."""


class RequestAborted(Exception):
    """The client went away before the request body was read."""


class DenyConnection(Exception):
    """Raised in a websocket.connect consumer to refuse the handshake (HTTP 403)."""


class ChannelSocketException(Exception):
    """Base of exceptions that, raised in a consumer, act on the message's socket."""

    def run(self, message) -> None:
        raise NotImplementedError


class WebsocketCloseException(ChannelSocketException):
    """Raised in a WebSocket consumer to close the socket, with an optional close code."""

    def __init__(self, code: int | None = None):
        if code is not None and not (code == 1000 or 3000 <= code <= 4999):
            raise ValueError(
                "invalid close code %r: use 1000 or a code from 3000 to 4999" % (code,)
            )
        self._code = code

    def run(self, message) -> None:
        if message.reply_channel is None:
            raise ValueError("cannot close a socket: the message has no reply_channel")
        message.reply_channel.send({"close": self._code or True}, immediately=True)


class SendNotAvailableOnDemultiplexer(Exception):
    """A demultiplexer routes messages to its consumers and cannot send itself."""
