from django.contrib.auth import views as auth
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from . import auth_views


def hello(request):
    return HttpResponse("hello")


def stream(request):
    return StreamingHttpResponse(b"chunk%d;" % i for i in range(5))


@csrf_exempt
def body_size(request):
    return HttpResponse(str(len(request.body)))


def whoami(request):
    return HttpResponse("%s %s" % (request.META["REMOTE_ADDR"], request.scheme))


urlpatterns = [
    path("hello/", hello),
    path("stream/", stream),
    path("body-size/", body_size),
    path("whoami/", whoami),
    path("accounts/login/", auth.LoginView.as_view()),
    path("accounts/logout/", auth.LogoutView.as_view()),
    path("accounts/user/", auth_views.whoami),
]
