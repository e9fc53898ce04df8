from django.urls import path

from benchsite import views

urlpatterns = [path("hello/", views.hello), path("db/", views.db)]
