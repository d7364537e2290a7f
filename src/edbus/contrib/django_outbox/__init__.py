"""The transactional outbox for Django services: add ``edbus.contrib.django_outbox`` to INSTALLED_APPS,
migrate, record events with ``DjangoOutbox`` and run ``manage.py edbus_outbox_relay`` (docs/outbox.md)."""
