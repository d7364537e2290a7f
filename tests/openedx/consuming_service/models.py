from django.db import models


class ReceivedEvent(models.Model):
    """Every delivery a receiver got (a retried event appears once per attempt)."""

    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=200)
    metadata = models.TextField()
    data = models.TextField()
    from_event_bus = models.BooleanField()
