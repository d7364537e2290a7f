"""A fault schedule drawn from a seed: the same seed, duration and scenario give the same faults."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

__all__ = ["FAULT_KINDS", "Fault", "build_schedule"]

FAULT_KINDS = ("kill_producer", "kill_consumer", "kill_broker",
               "kill_bookie", "kill_owner_broker", "restart_bookies", "stop_metadata")  # the last 4: cluster.py


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """SIGKILL one process ``at`` seconds into the fault phase; restart it ``down_for`` seconds later."""

    at: float
    kind: str
    target: int  # index of the producer, consumer or bookie (0 for the others)
    down_for: float


def build_schedule(seed: int, duration: float, kinds: Sequence[str], *, mean_interval: float,
                   producers: int, consumers: int, min_gap: float = 0.5,
                   down: tuple[float, float] = (0.0, 1.0), quiet_tail: float = 1.0) -> tuple[Fault, ...]:
    """Faults at exponentially distributed intervals (mean ``mean_interval``, at least ``min_gap``
    apart), none in the last ``quiet_tail`` seconds, at least one when there is room; each of a kind,
    target and downtime drawn from ``seed``."""
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kind(s) {sorted(unknown)}")
    rng = random.Random(seed)
    faults: list[Fault] = []
    end = duration - quiet_tail

    def draw(at: float) -> Fault:
        kind = rng.choice(list(kinds))
        count = {"kill_producer": producers, "kill_consumer": consumers, "kill_bookie": 3}.get(kind, 1)
        return Fault(round(at, 3), kind, rng.randrange(count), round(rng.uniform(*down), 3))

    t = 0.0
    while kinds:
        t += max(min_gap, rng.expovariate(1.0 / mean_interval))
        if t > end:
            break
        faults.append(draw(t))
    if kinds and not faults and end > min_gap:  # a short run still gets one fault
        faults.append(draw(rng.uniform(min_gap, end)))
    return tuple(faults)
