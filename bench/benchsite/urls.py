from django.conf import settings
from django.urls import path

from benchsite import views

urlpatterns = [path("hello/", views.hello), path("db/", views.db)]

if settings.STACK == "geventchannels":
    from benchsite import tasks

    urlpatterns.append(path("task/", tasks.enqueue))
