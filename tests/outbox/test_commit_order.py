"""The commit-order pitfall of auto-increment ids, on the servers where write transactions overlap
(SQLite runs one write transaction at a time, so it has no such gap)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from edbus import Bus
from edbus.outbox import Relay, SQLAlchemyOutbox
from edbus.outbox.tables import outbox
from tests.events import SEQ, Seq
from tests.outbox.test_relay import record, sent

pytestmark = pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True, scope="module")


def test_a_row_that_commits_after_a_later_row_is_not_skipped(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    relay = Relay(engine, bus)
    with engine.connect() as slow:
        tx = slow.begin()
        early = recorder.publish(slow, "seq", SEQ, Seq("a", 1))  # the lower seq, not yet committed
        late = record(engine, recorder, "b", 1)
        assert relay.step() == 1  # only the committed row is visible
        tx.commit()
    assert relay.step() == 1  # the lower seq, visible now, is sent: no "seq > last sent" cursor skipped it
    assert relay.step() == 0
    with engine.connect() as conn:
        seqs = dict(conn.execute(sa.select(outbox.c.event_id, outbox.c.seq)).all())
    assert seqs[early] < seqs[late]
    assert sent(bus) == [("b", 1), ("a", 1)]
