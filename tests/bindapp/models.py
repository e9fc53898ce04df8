from django.db import models


class Item(models.Model):
    """A row that lives in one room: its binding sends it to the group of that room."""

    name = models.CharField(max_length=20)
    price = models.IntegerField(default=0)
    room = models.CharField(max_length=10, default="a")
    secret = models.CharField(max_length=20, blank=True, default="")
    tags = models.ManyToManyField("Tag", blank=True)


class Tag(models.Model):
    label = models.CharField(max_length=20, unique=True)
