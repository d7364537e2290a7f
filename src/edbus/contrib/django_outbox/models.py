"""The tables of ``edbus.outbox.tables``, declared for Django's migrations (same names and columns)."""

from __future__ import annotations

from django.db import models


class OutboxEvent(models.Model):
    seq = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=64, unique=True)
    topic = models.CharField(max_length=255)
    type = models.CharField(max_length=255)
    key = models.TextField(null=True)
    bucket = models.IntegerField()
    headers = models.TextField()
    payload = models.BinaryField()
    created_at = models.FloatField()
    sent_at = models.FloatField(null=True)

    class Meta:
        db_table = "edbus_outbox"
        indexes = [models.Index(fields=["sent_at", "seq"], name="edbus_outbox_pending")]  # noqa: RUF012


class OutboxLease(models.Model):
    shard = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=200)
    expires_at = models.FloatField()

    class Meta:
        db_table = "edbus_outbox_lease"


class Consumed(models.Model):
    id = models.BigAutoField(primary_key=True)
    subscription = models.CharField(max_length=200)
    event_id = models.CharField(max_length=64)
    consumed_at = models.FloatField()

    class Meta:
        db_table = "edbus_consumed"
        constraints = [  # noqa: RUF012
            models.UniqueConstraint(fields=["subscription", "event_id"], name="edbus_consumed_once")]
