from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


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
]
