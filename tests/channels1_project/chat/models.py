from django.db import models


class Room(models.Model):
    name = models.SlugField(unique=True)


class Note(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE)
    text = models.CharField(max_length=200)
