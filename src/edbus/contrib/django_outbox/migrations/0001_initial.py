from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []  # noqa: RUF012

    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="OutboxEvent",
            fields=[
                ("seq", models.BigAutoField(primary_key=True, serialize=False)),
                ("event_id", models.CharField(max_length=64, unique=True)),
                ("topic", models.CharField(max_length=255)),
                ("type", models.CharField(max_length=255)),
                ("key", models.TextField(null=True)),
                ("bucket", models.IntegerField()),
                ("headers", models.TextField()),
                ("payload", models.BinaryField()),
                ("created_at", models.FloatField()),
                ("sent_at", models.FloatField(null=True)),
            ],
            options={"db_table": "edbus_outbox",
                     "indexes": [models.Index(fields=["sent_at", "seq"], name="edbus_outbox_pending")]},
        ),
        migrations.CreateModel(
            name="OutboxLease",
            fields=[
                ("shard", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("holder", models.CharField(max_length=200)),
                ("expires_at", models.FloatField()),
            ],
            options={"db_table": "edbus_outbox_lease"},
        ),
        migrations.CreateModel(
            name="Consumed",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("subscription", models.CharField(max_length=200)),
                ("event_id", models.CharField(max_length=64)),
                ("consumed_at", models.FloatField()),
            ],
            options={"db_table": "edbus_consumed",
                     "constraints": [models.UniqueConstraint(fields=("subscription", "event_id"),
                                                             name="edbus_consumed_once")]},
        ),
    ]
