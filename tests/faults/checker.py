"""The checker: reads every history log of a run and computes its figures and verdict.

Definitions (also in docs/reliability.md):

- **attempted**: distinct event ids a producer tried to publish; **acked**: ids whose publish returned;
  **unknown**: ids with at least one attempt that got no answer (its producer was killed during the
  publish, or the publish raised ``StoreError``); **unresolved**: attempted, never acked, even by the
  retry with the same id that a restarted producer makes.
- **delivered unique**: distinct ids some handler started on; **lost**: acked, never delivered and not
  in the dead-letter topic; **unexpected**: delivered, never attempted; **dead-lettered**: ids in the
  subscription's dead-letter topic (no handler fails in the harness, so any is a fault's doing).
- **duplicates**: deliveries beyond the first of an id (total, and the worst for one id);
  **duplicates without a fault**: redeliveries with no fault between the id's first publish attempt
  and the redelivery (a fault lasts from its kill to the end of its restart); **stored twice**: ids
  found more than once in the topic.
- **out-of-order** (per key): the first delivery of ``(key, seq)`` happens after the first delivery of
  some ``(key, seq')`` with ``seq' > seq``. Redeliveries of an id already delivered are duplicates, not
  order violations: after a kill, ``5, 6, 5, 6, 7`` is in order, ``5, 7, 6`` is not. Keys belong to one
  producer, whose publishes of a key are sequential, so ``seq`` is the key's order in the topic.
- **duplicates per consumer kill**: ids the killed process had started handling that were delivered
  again afterwards (what it handled but had not acked); the bound is on all duplicates of the run:
  at most (consumer kills) x (one fetch batch + the in-flight window).
- **recovery** after a fault at ``t``: producer kill: until the restarted producer's first ack; consumer
  kill: until every event acked before ``t`` and every event the victim had started is delivered (again);
  broker kill: the later of the first ack after ``t`` and the consumer-side figure.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.faults.history import read_history

__all__ = ["FaultRecovery", "Figures", "Rules", "check", "markdown_header", "markdown_row"]

ORDERED_MODES = ("key_ordered", "exclusive")


@dataclasses.dataclass(frozen=True, slots=True)
class FaultRecovery:
    kind: str
    at: float  # seconds since the first record of the run
    victim: int
    recovery: float  # seconds
    duplicates: int  # consumer kill: the victim's events delivered again


@dataclasses.dataclass(frozen=True, slots=True)
class Rules:
    """What a run must satisfy beyond lost = unexpected = 0."""

    mode: str
    duplicates_per_kill: int | None = None  # duplicates at most this many times the consumer kills
    peak_memory_mb: float | None = None  # consumers' peak RSS must stay under it
    allow_stored_twice: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Figures:
    attempted: int
    acked: int
    unknown: int
    unresolved: int
    delivered_unique: int
    deliveries: int
    lost: int
    unexpected: int
    dead_lettered: int
    duplicates: int
    worst_duplicates: int
    duplicates_without_fault: int
    stored_twice: int | None
    out_of_order: int
    out_of_order_keys: int
    faults: tuple[FaultRecovery, ...]
    peak_consumer_mb: float
    span: float  # seconds from the first to the last record

    @property
    def worst_duplicates_per_kill(self) -> int:
        return max((f.duplicates for f in self.faults if f.kind == "kill_consumer"), default=0)

    def recovery(self) -> tuple[float, float] | None:
        """(median, max) recovery in seconds, None without faults."""
        if not self.faults:
            return None
        times = [f.recovery for f in self.faults]
        return statistics.median(times), max(times)

    def violations(self, rules: Rules) -> list[str]:
        """Why the run fails; empty when it passes."""
        out = [f"{name} = {value}" for name, value in (
            ("lost", self.lost), ("unexpected", self.unexpected), ("dead-lettered", self.dead_lettered),
            ("unresolved publishes", self.unresolved), ("duplicates without a fault", self.duplicates_without_fault),
        ) if value]
        if self.stored_twice and not rules.allow_stored_twice:
            out.append(f"stored twice = {self.stored_twice} (a retried unknown publish was stored again)")
        if rules.mode in ORDERED_MODES and self.out_of_order:
            out.append(f"out-of-order = {self.out_of_order} in {self.out_of_order_keys} key(s) ({rules.mode})")
        if rules.duplicates_per_kill is not None:
            kills = sum(f.kind == "kill_consumer" for f in self.faults)
            if self.duplicates > kills * rules.duplicates_per_kill:
                out.append(f"duplicates after consumer kills = {self.duplicates} > {kills} kill(s) x "
                           f"{rules.duplicates_per_kill} (one fetch batch and the in-flight window each)")
        if rules.peak_memory_mb is not None and self.peak_consumer_mb > rules.peak_memory_mb:
            out.append(f"peak consumer memory {self.peak_consumer_mb:.0f} MB > {rules.peak_memory_mb:.0f} MB")
        return out


def check(history: Path, *, stored: Mapping[str, int] | None = None,
          dead_lettered: Iterable[str] = ()) -> Figures:
    """``stored``: copies of each id in the topic (None: not read); ``dead_lettered``: ids in the DLQ."""
    records = list(read_history(history))
    producers = [r for r in records if r["k"] in ("attempt", "ack", "error")]
    deliveries = sorted((r for r in records if r["k"] == "delivery"), key=lambda r: r["t"])
    runner = [r for r in records if r["log"] == "runner"]
    origin = min((r["t"] for r in records), default=0.0)

    first_attempt: dict[str, float] = {}
    ack_time: dict[str, float] = {}
    acks_by_log: dict[str, list[float]] = defaultdict(list)
    unknown: set[str] = set()
    pending: dict[int, dict[str, None]] = defaultdict(dict)  # per process: attempted, not yet answered
    for r in producers:
        if r["k"] == "attempt":
            first_attempt.setdefault(r["id"], r["t"])
            pending[r["pid"]][r["id"]] = None
        else:
            for i in r["ids"]:
                pending[r["pid"]].pop(i, None)
                if r["k"] == "ack":
                    ack_time.setdefault(i, r["t"])
                else:
                    unknown.add(i)
            if r["k"] == "ack":
                acks_by_log[r["log"]].append(r["t"])
    for ids in pending.values():  # left without an answer by a kill
        unknown.update(ids)

    counts = Counter(r["id"] for r in deliveries)
    first_delivery: dict[str, float] = {}
    for r in deliveries:
        first_delivery.setdefault(r["id"], r["t"])
    dead = set(dead_lettered)
    fault_records = [r for r in runner if r["k"] == "fault"]
    fault_spans = _fault_spans(runner)

    return Figures(
        attempted=len(first_attempt), acked=len(ack_time), unknown=len(unknown),
        unresolved=len(set(first_attempt) - set(ack_time)), delivered_unique=len(counts),
        deliveries=len(deliveries), lost=len(set(ack_time) - set(counts) - dead),
        unexpected=len(set(counts) - set(first_attempt)), dead_lettered=len(dead),
        duplicates=sum(c - 1 for c in counts.values()),
        worst_duplicates=max((c - 1 for c in counts.values()), default=0),
        duplicates_without_fault=_unexplained_duplicates(deliveries, first_attempt, fault_spans),
        stored_twice=None if stored is None else sum(c > 1 for c in stored.values()),
        **_order(deliveries),
        faults=tuple(_recoveries(fault_records, deliveries, first_delivery, ack_time, acks_by_log, origin)),
        peak_consumer_mb=max((r["peak_kb"] for r in runner if r["k"] == "memory"), default=0) / 1024,
        span=max((r["t"] for r in records), default=origin) - origin,
    )


def _fault_spans(runner: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each fault from its kill to the end of its restart (the runner applies one fault at a time): a
    broker down for 30 s or a rolling restart of the bookies is one fault for all that time."""
    spans: list[tuple[float, float]] = []
    begin: float | None = None
    for r in runner:
        if r["k"] == "fault":
            if begin is not None:
                spans.append((begin, begin))
            begin = r["t"]
        elif r["k"] == "restarted" and begin is not None:
            spans.append((begin, r["t"]))
            begin = None
    if begin is not None:
        spans.append((begin, begin))
    return spans


def _unexplained_duplicates(deliveries: Sequence[dict[str, Any]], first_attempt: Mapping[str, float],
                            fault_spans: Sequence[tuple[float, float]]) -> int:
    seen: set[str] = set()
    unexplained = 0
    for r in deliveries:
        if r["id"] in seen:
            start = first_attempt.get(r["id"], r["t"])
            if not any(begin <= r["t"] and end >= start for begin, end in fault_spans):
                unexplained += 1
        seen.add(r["id"])
    return unexplained


def _order(deliveries: Sequence[dict[str, Any]]) -> dict[str, int]:
    seen: set[str] = set()
    highest: dict[str, int] = {}
    bad_keys: set[str] = set()
    bad = 0
    for r in deliveries:
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        key, seq = r["key"], r["seq"]
        if seq < highest.get(key, -1):
            bad += 1
            bad_keys.add(key)
        highest[key] = max(seq, highest.get(key, -1))
    return {"out_of_order": bad, "out_of_order_keys": len(bad_keys)}


def _recoveries(faults: Sequence[dict[str, Any]], deliveries: Sequence[dict[str, Any]],
                first_delivery: Mapping[str, float], ack_time: Mapping[str, float],
                acks_by_log: Mapping[str, list[float]], origin: float) -> list[FaultRecovery]:
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in deliveries:
        by_pid[r["pid"]].append(r)
    out = []
    for f in faults:
        t = f["t"]
        # producer side: the first ack after the fault (of the victim's slot for a producer kill)
        logs = [f"p{f['target']}"] if f["kind"] == "kill_producer" else list(acks_by_log)
        later = [a for log in logs for a in acks_by_log.get(log, []) if a > t]
        publish = (min(later) - t) if later else 0.0
        # consumer side: everything acked before the fault delivered, the victim's started events again
        waits = [first_delivery[i] - t for i, a in ack_time.items() if a < t and first_delivery.get(i, t) > t]
        victims = {r["id"] for r in by_pid.get(f["victim"], [])} if f["kind"] == "kill_consumer" else set()
        again: dict[str, float] = {}
        for r in deliveries:
            if r["t"] > t and r["id"] in victims and r["pid"] != f["victim"]:
                again.setdefault(r["id"], r["t"])
        waits += [a - t for a in again.values()]
        delivery = max(waits, default=0.0)
        recovery = {"kill_producer": publish, "kill_consumer": delivery}.get(f["kind"], max(publish, delivery))
        out.append(FaultRecovery(f["kind"], round(t - origin, 3), f["victim"], recovery, len(again)))
    return out


COLUMNS = ("backend", "scenario", "mode", "seed", "duration s", "events attempted", "acked", "unknown",
           "delivered unique", "lost", "unexpected", "stored twice", "duplicates (worst/event)",
           "out-of-order", "faults", "recovery median / max s", "peak consumer MB", "verdict")


def markdown_header() -> str:
    return "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def markdown_row(backend: str, scenario: str, seed: int, duration: float, figures: Figures, rules: Rules) -> str:
    rec = figures.recovery()
    problems = figures.violations(rules)
    cells = [backend, scenario, rules.mode, str(seed), f"{duration:.0f}", f"{figures.attempted:,}",
             f"{figures.acked:,}", f"{figures.unknown:,}", f"{figures.delivered_unique:,}", str(figures.lost),
             str(figures.unexpected), "—" if figures.stored_twice is None else str(figures.stored_twice),
             f"{figures.duplicates:,} ({figures.worst_duplicates})", str(figures.out_of_order),
             str(len(figures.faults)), "—" if rec is None else f"{rec[0]:.2f} / {rec[1]:.2f}",
             f"{figures.peak_consumer_mb:.0f}", "pass" if not problems else "FAIL: " + "; ".join(problems)]
    return "| " + " | ".join(cells) + " |"
