"""A Django service on one database (a SQLAlchemy URL): migrates the outbox app, then records events in
``atomic()`` blocks that commit or roll back, and runs the relay command. Run as a process per database."""

from __future__ import annotations

import json
import sys

import django
import sqlalchemy as sa
from django.conf import settings

ENGINES = {"postgresql": "django.db.backends.postgresql", "mysql": "django.db.backends.mysql",
           "sqlite": "django.db.backends.sqlite3"}


def configure(db_url: str, bus_url: str, mode: str) -> None:
    url = sa.make_url(db_url)
    if url.get_backend_name() == "mysql":
        import pymysql

        pymysql.install_as_MySQLdb()
    settings.configure(
        DATABASES={"default": {"ENGINE": ENGINES[url.get_backend_name()], "NAME": url.database,
                               "USER": url.username or "", "PASSWORD": url.password or "",
                               "HOST": url.host or "", "PORT": str(url.port or "")}},
        INSTALLED_APPS=["edbus.contrib.django_outbox"], USE_TZ=True, EDBUS_URL=bus_url,
        EVENT_BUS_PRODUCER_MODE=json.loads(mode))
    django.setup()


def main() -> None:
    db_url, bus_url, mode = sys.argv[1:4]
    configure(db_url, bus_url, mode)
    from django.core.management import call_command
    from django.db import transaction

    from edbus import Bus
    from edbus.contrib.django_outbox.recorder import DjangoOutbox
    from tests.events import SEQ, Seq

    call_command("migrate", verbosity=0)
    bus = Bus.from_url(bus_url)
    recorder = DjangoOutbox(bus)
    ids = {}
    try:
        with transaction.atomic():
            ids["rolled_back"] = recorder.publish("seq", SEQ, Seq("k", 0))
            raise RuntimeError
    except RuntimeError:
        pass
    with transaction.atomic():
        ids["committed"] = recorder.publish_many("seq", [(SEQ, Seq("k", n)) for n in (1, 2, 3)])
    call_command("edbus_outbox_relay", "--until-idle", "--poll", "0.01")
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
