from django.shortcuts import render

from .models import Message

HISTORY = 50


def index(request):
    latest = Message.objects.order_by("-id")[:HISTORY]
    return render(request, "chat/index.html", {"history": reversed(latest)})
