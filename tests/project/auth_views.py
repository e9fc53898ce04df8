"""Views of the session and auth tests: who the browser is logged in as."""

from django.http import HttpResponse


def whoami(request):
    return HttpResponse(request.user.username if request.user.is_authenticated else "-")
