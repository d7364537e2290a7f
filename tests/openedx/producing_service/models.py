from django.db import models


class SentEvent(models.Model):
    """Every signal event this service sent, as its receivers saw it (metadata and data as JSON)."""

    event_id = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=200)
    metadata = models.TextField()
    data = models.TextField()
