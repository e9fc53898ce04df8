from django.core.exceptions import ValidationError
from django.db import models


class Message(models.Model):
    """One line of the chat; every tab hears of new ones through MessageBinding."""

    text = models.CharField(max_length=2000)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def clean(self) -> None:
        self.text = self.text.strip()
        if not self.text:
            raise ValidationError({"text": "say something"})

    def __str__(self) -> str:
        return self.text
