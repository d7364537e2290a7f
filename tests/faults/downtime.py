"""Per fault kind of a run, from its histories: how many, how long the target was down (kill to serving
again), whether publishes were acknowledged meanwhile, and the first acknowledged publish after the kill;
for broker kills, when the topic was on the other broker. ``python -m tests.faults.downtime HISTORY_DIR``
(the ``history/`` folder of a run kept with ``--workdir``)."""

from __future__ import annotations

import bisect
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from tests.faults.history import read_history


def summary(history: Path) -> list[str]:
    records = list(read_history(history))
    runner = [r for r in records if r["log"] == "runner"]
    acks = sorted(r["t"] for r in records if r["k"] == "ack")
    # per kind: (seconds down, acks while down, seconds to the first ack after the kill or None)
    spans: dict[str, list[tuple[float, int, float | None]]] = defaultdict(list)
    fault = None
    for r in runner:
        if r["k"] == "fault":
            fault = r
        elif r["k"] == "restarted" and fault is not None:
            start, end = fault["t"], r["t"]
            i = bisect.bisect_right(acks, start)
            spans[fault["kind"]].append((end - start, bisect.bisect_left(acks, end) - i,
                                         acks[i] - start if i < len(acks) else None))
            fault = None
    lines = []
    for kind, rows in sorted(spans.items()):
        down = [d for d, _, _ in rows]
        first = [f for _, _, f in rows if f is not None]
        lines.append(f"{kind}: {len(rows)} faults; down median {statistics.median(down):.1f} s, max {max(down):.1f} s; "
                     f"publishes acked while down in {sum(n > 0 for _, n, _ in rows)} of {len(rows)}; first ack "
                     f"after the kill median {statistics.median(first) if first else 0:.2f} s, "
                     f"max {max(first, default=0):.2f} s")
    moved = [r["after"] for r in runner if r["k"] == "moved"]
    if moved:
        lines.append(f"topic on the other broker after a broker kill: median {statistics.median(moved):.1f} s, "
                     f"max {max(moved):.1f} s")
    return lines


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(folder, *summary(Path(folder)), sep="\n  ")
