"""The HTTP fast path measured on every system: a tiny view and one with one ORM query."""

from django.contrib.auth.models import User
from django.http import HttpResponse


def hello(request):
    return HttpResponse(b"hello", content_type="text/plain")


def db(request):
    user = User.objects.filter(pk=1).only("username").first()
    return HttpResponse(user.username if user else "-", content_type="text/plain")
