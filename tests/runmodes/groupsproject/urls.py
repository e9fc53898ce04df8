import os

from django.http import JsonResponse
from django.urls import path

from geventchannels.server import ChannelsApplication


def whoami(request):
    """Which worker serves this request: its pid and its reply prefix (the sockets it
    serves have channel names under that prefix)."""
    app = ChannelsApplication.current
    return JsonResponse({"pid": os.getpid(), "prefix": app.reply_prefix if app else None})


urlpatterns = [path("whoami/", whoami)]
