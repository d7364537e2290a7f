"""One active relay per shard: a lease row in the service's database, taken when free or expired, renewed
by its holder. A standby polls and takes over once the holder stops renewing (killed, hung, partitioned).

Two relays overlapping (a holder paused past its lease) loses nothing: both publish rows with their
outbox ids, which the embedded store stores once (on Pulsar the second copy is a duplicate with the same
id, docs/outbox.md). The lease keeps the normal case to one sender, so the bus sees each key's events in
outbox order. Clocks of the relay hosts must agree to well within the ttl.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from edbus.outbox.tables import lease

__all__ = ["Lease"]


class Lease:
    def __init__(self, engine: sa.Engine, shard: str, holder: str, ttl: float = 10.0) -> None:
        self.engine = engine
        self.shard = shard
        self.holder = holder
        self.ttl = ttl
        self.expires_at = 0.0

    @property
    def held(self) -> bool:
        return time.time() < self.expires_at

    def acquire(self) -> bool:
        """Take or renew the lease; True while this holder has it."""
        now = time.time()
        expires = now + self.ttl
        with self.engine.begin() as conn:
            cur = conn.execute(
                sa.update(lease)
                .where(lease.c.shard == self.shard)
                .where(sa.or_(lease.c.holder == self.holder, lease.c.expires_at < now))
                .values(holder=self.holder, expires_at=expires))
            taken = bool(cur.rowcount)
        if not taken:
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(lease).values(shard=self.shard, holder=self.holder, expires_at=expires))
                taken = True
            except sa.exc.IntegrityError:  # someone holds it
                taken = False
        self.expires_at = expires if taken else 0.0
        return taken

    def release(self) -> None:
        if self.expires_at:
            with self.engine.begin() as conn:
                conn.execute(sa.update(lease).where(lease.c.shard == self.shard)
                             .where(lease.c.holder == self.holder).values(expires_at=0.0))
        self.expires_at = 0.0

    def current(self) -> tuple[str, float] | None:
        """(holder, seconds left) of the shard's lease, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(lease.c.holder, lease.c.expires_at)
                               .where(lease.c.shard == self.shard)).first()
        return None if row is None else (row[0], row[1] - time.time())
