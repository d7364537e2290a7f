"""The long run: ``python -m tests.faults --backend B --scenario NAME|all|cluster --seed N --duration S``.

Prints one Markdown table row per run (pastes into docs/reliability.md) and each fault's recovery;
exit code 1 when a run fails its checks. Pulsar scenarios that do not kill the broker use
``$EDBUS_TEST_PULSAR`` / ``$EDBUS_TEST_PULSAR_ADMIN`` (default 127.0.0.1:6650 / :8080); ``broker_kill``
starts a broker of its own with ``scripts/pulsar.sh``. The ``cluster_*`` scenarios (``--scenario cluster``:
all of them; ``all`` leaves them out) run on the cluster of ``$EDBUS_CLUSTER_DATA`` if it serves, else on one
of their own (``scripts/pulsar-cluster.sh``, free ports, deleted afterwards).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.faults.checker import markdown_header
from tests.faults.scenarios import SCENARIOS, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    p.add_argument("--backend", choices=["sqlite", "pulsar", "all"], default="sqlite")
    p.add_argument("--scenario", choices=[*SCENARIOS, "all", "cluster"], default="all")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of the fault phase of each run")
    p.add_argument("--backlog", type=int, default=None, help="events of the backlog scenario (default 1,000,000)")
    p.add_argument("--workdir", type=Path, default=None, help="keep histories and stores here (default: a "
                   "temporary folder, removed after a passing run)")
    p.add_argument("--no-pin-schema", action="store_true", help="Pulsar: do not hold the schema's topic "
                   "against the broker's inactive-topic clean-up (shows the finding in docs/reliability.md)")
    args = p.parse_args(argv)
    backends = ["sqlite", "pulsar"] if args.backend == "all" else [args.backend]
    cluster = [n for n in SCENARIOS if n.startswith("cluster_")]
    names = {"all": [n for n in SCENARIOS if n not in cluster], "cluster": cluster}.get(args.scenario, [args.scenario])
    root = args.workdir or Path(tempfile.mkdtemp(prefix="edbus-faults-"))
    rows, details, failed = [], [], False
    for backend in backends:
        for name in names:
            scenario = SCENARIOS[name]
            if backend not in scenario.backends:
                continue
            print(f"== {backend} {name} (seed {args.seed}, {args.duration:g} s)", file=sys.stderr, flush=True)
            result = run(scenario, backend, args.seed, args.duration, root / f"{backend}-{name}",
                         backlog=args.backlog, pin_schema=not args.no_pin_schema)
            rows.append(result.markdown())
            details.append(result.details())
            failed = failed or not result.passed
            print(rows[-1], "\n" + details[-1], file=sys.stderr, flush=True)
    print(markdown_header())
    print("\n".join(rows))
    print()
    print("\n".join(details))
    if failed:
        print(f"\nhistories and stores kept in {root}", file=sys.stderr)
    elif args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
