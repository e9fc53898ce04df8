from django.contrib.auth import authenticate, login
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from chat.models import Note, Room


def login_view(request):
    """GET: a CSRF token to post with; POST: log in."""
    if request.method != "POST":
        return HttpResponse(get_token(request))
    user = authenticate(
        request, username=request.POST.get("username"), password=request.POST.get("password")
    )
    if user is None:
        return HttpResponse("refused", status=403)
    login(request, user)
    return HttpResponse("logged in")


@csrf_exempt
def add_note(request, room):
    room, _ = Room.objects.get_or_create(name=room)
    Note.objects.create(room=room, text=request.POST["text"])
    return HttpResponse("added", status=201)


urlpatterns = [
    path("login/", login_view),
    path("notes/<slug:room>/", add_note),
]
