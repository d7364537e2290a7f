"""``edbus demo``: the course catalog demo on the embedded store (or ``--url``).

A simulated Studio publishes the openedx-events content-authoring events edx-platform sends (course
created, rerun, catalog info changed, XBlock published); a catalog service (``--replicas`` processes
sharing a key_ordered subscription) keeps a replica in its own database; an audit service (a second,
exclusive subscription) logs every event; poison changes end in the replica's dead-letter topic. Other
services (``--service``, ``DEFAULT_SERVICES``) run beside them; with ``--lrs``, the xAPI feed too
(``edbus_services.xapi.demo``: a simulated LMS's learning events become statements in that LRS). Every process
builds its own Bus. The run ends with a summary and exit code 0 only when every check passed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from edbus.backends import dlq_topic
from edbus.cli.output import console
from edbus.errors import EdbusError, redact
from edbus_services.catalog.report import DemoReport
from edbus_services.catalog.runner import DemoFailed, Progress, run_demo
from edbus_services.catalog.service import AUDIT_SUBSCRIPTION, REPLICA_SUBSCRIPTION, DemoConfig

__all__ = ["demo"]

_SERVICE_FILES = ("studio.db", "replica.db", "audit.db")
DEFAULT_SERVICES: tuple[str, ...] = ()  # "module:attribute" of DemoServices every demo runs beside the catalog
XAPI_SERVICE = "edbus_services.xapi.demo:SERVICE"  # run when an LRS is given (--lrs)


def _render(p: Progress, replicas: int) -> Group:
    head = Text.assemble(("edbus demo ", "bold"), f"— {p.phase}, {p.elapsed:.1f}s  ",
                         (" ".join(f"{name}={pid}" for name, pid in p.pids.items()), "dim"))
    rows = Table.grid(padding=(0, 2))
    for _ in range(4):
        rows.add_column()
    total = max(p.planned, 1)
    rows.add_row("Studio → bus", ProgressBar(total=total, completed=p.published, width=36),
                 f"{p.published:>6} / {p.planned} published", "")
    rows.add_row(f"replica ({replicas} processes)", ProgressBar(total=total, completed=p.replica_done, width=36),
                 f"{p.replica_done:>6} / {p.planned} consumed", f"dead letters: {p.replica_dead}")
    rows.add_row("audit (1 process)", ProgressBar(total=total, completed=p.audit_done, width=36),
                 f"{p.audit_done:>6} / {p.planned} consumed", "")
    for name, sp in p.services.items():
        rows.add_row(name, ProgressBar(total=max(sp.total, sp.done, 1), completed=sp.done, width=36),
                     f"{sp.done:>6} / {sp.total or '?'} done", sp.detail)
    return Group(head, rows)


def _yes(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[bold red]NO[/bold red]"


def _summary(report: DemoReport, config: DemoConfig) -> Table:
    r, a = report.replica, report.audit
    types = report.by_type
    out = Table(title="edbus demo — summary", title_justify="left", show_header=False, box=None, padding=(0, 2))
    out.add_column(style="bold", no_wrap=True)
    out.add_column(overflow="fold")
    out.add_row("events published", f"{report.published:,} of {report.planned:,} planned on topic {config.topic!r} "
                f"(openedx-events signals): {types.get('created', 0):,} course.created, {types.get('rerun', 0):,} "
                f"course.rerun.completed, {types.get('changed', 0):,} course.catalog_info.changed "
                f"({len(report.poison_ids)} of them poison), {types.get('published', 0):,} xblock.published")
    out.add_row(f"consumed: {REPLICA_SUBSCRIPTION}",
                f"{r.recorded:,} applied + {r.dead_lettered} dead-lettered, {r.mode}; the {r.processes} processes that "
                f"stopped report {r.deliveries:,} events done, {r.retries} retries, {r.duplicates} redeliveries "
                f"ignored (already applied); backlog {r.backlog}")
    out.add_row(f"consumed: {AUDIT_SUBSCRIPTION}",
                f"{a.recorded:,} recorded by {a.processes} process, {a.mode}; "
                f"backlog {a.backlog}; complete: {_yes(report.audit_complete)}")
    detail = (f"{report.replica_courses} courses vs {report.source_courses} in Studio, compared field by field "
              f"with the event that last set each row; every valid change applied exactly once: "
              f"{_yes(report.applied_exactly_once)}. Poison changes are in Studio's change log but were never "
              "applied to its catalog, so equality excludes them")
    if report.mismatches:
        detail += f"; {len(report.mismatches)} differences, first: " + "; ".join(report.mismatches[:5])
    out.add_row("replica equals source", f"{_yes(report.replica_equal)} — {detail}")
    out.add_row("per-course order", f"{_yes(report.order_preserved)} — the audit log received each course's "
                "events in the order of Studio's change log")
    if report.rebuild is not None:
        rb = report.rebuild
        out.add_row("rebuild by replay", f"{_yes(rb.equal)} — a new subscription replayed the topic from its start "
                    f"into an empty replica: {rb.events:,} events, {rb.runs} course runs in {rb.seconds:.2f} s; "
                    "every row and column equal to the live replica")
    dead = report.dead_letters
    example = f"; e.g. {dead[0].error_type} after {dead[0].attempts} attempts: {dead[0].error}" if dead else ""
    out.add_row("dead letters", f"{len(dead)} in {dlq_topic(config.topic, REPLICA_SUBSCRIPTION)}, expected the "
                f"{len(report.poison_ids)} poison changes: {_yes(report.dead_letters_ok)}{example}")
    out.add_row("propagation latency", f"p50 {report.latency_p50 * 1000:.1f} ms, p99 {report.latency_p99 * 1000:.1f} "
                f"ms, max {report.latency_max * 1000:.1f} ms (event time at publish → replica transaction, "
                f"{r.recorded:,} events)")
    codes = ", ".join(f"{name}={code}" for name, code in report.exit_codes.items())
    killed = f" ({', '.join(report.killed)} SIGKILLed on purpose: --chaos)" if report.killed else ""
    for name, figures in report.services:
        for label, text in figures.rows:
            out.add_row(f"{name}: {label}", text)
        out.add_row(f"{name}: checks", _yes(figures.ok))
    out.add_row("processes", f"{len(report.exit_codes)} run, exit codes {codes}{killed}; left running: "
                f"{report.left_running}; {'the others ' if report.killed else ''}stopped gracefully: "
                f"{_yes(report.clean_shutdown)}")
    out.add_row("duration", f"{report.duration:.1f}s at {config.rate:g} events/s" if config.rate
                else f"{report.duration:.1f}s, publishing as fast as possible")
    out.add_row("result", "[bold green]OK[/bold green]" if report.ok else "[bold red]FAILED[/bold red]")
    return out


class _Terminated(KeyboardInterrupt):
    """SIGTERM: stop like Ctrl-C (the processes finish what they hold), then exit 143."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def _stop_on_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """This process's own edbus logs (the rebuild's consumer reporting the poison changes it retries) go
    to a file of the work directory, as the child processes' do, not through the live view."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s demo[%(process)d] %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("edbus")
    previous = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = previous
        handler.close()


def _store_url(ctx: click.Context, url: str | None, workdir: Path) -> str:
    """``--url``; else the group's ``--url`` when given on the command line; else a fresh store in workdir."""
    if url:
        return url
    parent = ctx.parent
    if parent is not None and parent.get_parameter_source("url") == click.core.ParameterSource.COMMANDLINE:
        group_url = parent.params.get("url")
        if group_url:
            return str(group_url)
    return f"sqlite:///{workdir / 'bus.db'}"


@contextlib.contextmanager
def _lrs_environment(lrs: str | None, lrs_user: str | None) -> Iterator[None]:
    """The xAPI service's processes (children of this one) find the LRS in the environment: set it for the
    run, then restore it."""
    if lrs is None:
        yield
        return
    from edbus_services.xapi.demo import ENV_LRS_URL, ENV_LRS_USER

    saved = {name: os.environ.get(name) for name in (ENV_LRS_URL, ENV_LRS_USER)}
    os.environ[ENV_LRS_URL], os.environ[ENV_LRS_USER] = lrs, lrs_user or ""
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               short_help="Run the course catalog demo (Studio, replica, audit, dead letters, other services).")
@click.option("--url", metavar="URL", help="The bus store. Default: a fresh store in the work directory "
              "($EDBUS_URL is not used: the demo never writes to your store unless asked).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the services' databases and logs go (kept). Default: a temporary directory, "
                   "removed at the end unless --keep.")
@click.option("--keep", is_flag=True, help="Keep the temporary work directory (databases and process logs).")
@click.option("--courses", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Courses Studio creates first.")
@click.option("--changes", type=click.IntRange(0, 1_000_000), default=3000, show_default=True,
              help="Changes after that (4% new courses, 3% reruns, 15% content publishes, the rest catalog "
                   "edits).")
@click.option("--poison", type=click.IntRange(0, 1000), default=5, show_default=True,
              help="Poison changes (blank course name) the replica refuses: they must end as dead letters.")
@click.option("--rate", type=click.FloatRange(0), default=800.0, show_default=True,
              help="Events per second Studio publishes (0: as fast as it can).")
@click.option("--replicas", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Processes of the catalog service sharing the key_ordered subscription.")
@click.option("--topic", default="course-catalog", show_default=True,
              help="The topic Studio sends the catalog signals to (on a fresh store: any).")
@click.option("--service", "services", metavar="MODULE:ATTRIBUTE", multiple=True,
              help="Also run this DemoService (repeatable; edbus_services.catalog.service.DemoService).")
@click.option("--lrs", metavar="URL", help="Also run the xAPI feed: a simulated LMS publishes learning events, "
              "the feed stores their statements in this LRS (its xAPI endpoint, e.g. http://127.0.0.1:8100/xAPI/), "
              "the demo checks them. Password: $EDBUS_LRS_PASSWORD. `make demo` starts a Ralph LRS for it.")
@click.option("--lrs-user", metavar="USER", help="The LRS's HTTP Basic user (with --lrs).")
@click.option("--seed", type=int, default=2024, show_default=True, help="Seed of Studio's simulated activity.")
@click.option("--chaos", is_flag=True,
              help="SIGKILL a replica process mid-run and start another: what it held is redelivered after "
                   "its lease (2 s here) and the replica ignores what it had already applied.")
@click.option("--timeout", type=click.FloatRange(5), default=55.0, show_default=True,
              help="Give up (and kill every process) after this many seconds.")
@click.pass_context
def demo(ctx: click.Context, url: str | None, workdir: Path | None, keep: bool, courses: int, changes: int,
         poison: int, rate: float, replicas: int, topic: str, services: tuple[str, ...], lrs: str | None,
         lrs_user: str | None, seed: int, chaos: bool, timeout: float) -> None:
    """Run the course catalog demo: a simulated Studio publishes openedx-events course catalog events, a
    catalog service keeps a replica in its own database, an audit service logs every event, poison changes
    end in the dead-letter topic, other services run beside them. Producers and consumers are separate
    processes.

    Exit code 0 only when the replica equals Studio's catalog, the poison changes (and only they) are dead
    letters, the audit log is complete and in order, and every process stopped gracefully.
    """
    if lrs is not None and (not lrs_user or not os.environ.get("EDBUS_LRS_PASSWORD")):
        raise click.UsageError("--lrs needs --lrs-user and the password in $EDBUS_LRS_PASSWORD")
    if lrs is not None:
        from edbus_services.xapi.demo import check_lrs
        from edbus_services.xapi.lrs import LrsConfig

        try:
            check_lrs(LrsConfig(lrs, lrs_user or "", os.environ.get("EDBUS_LRS_PASSWORD", ""), timeout=5.0))
        except EdbusError as exc:
            raise click.ClickException(str(exc)) from None
        services += (XAPI_SERVICE,)
    temporary = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="edbus-demo-"))
    elif any((workdir / name).exists() for name in _SERVICE_FILES):
        raise click.UsageError(f"{workdir} holds databases of an earlier run: use an empty or new directory")
    workdir = workdir.resolve()
    config = DemoConfig(url=_store_url(ctx, url, workdir), workdir=str(workdir), topic=topic, courses=courses,
                        changes=changes, poison=poison, rate=rate, seed=seed, replicas=replicas,
                        lease=2.0 if chaos else 30.0, services=tuple(dict.fromkeys(DEFAULT_SERVICES + services)))
    out = console()
    previous = _stop_on_sigterm()
    try:
        out.print(f"[bold]edbus demo[/bold]: store {redact(config.url)}, work directory {workdir}")
        if XAPI_SERVICE in config.services:
            out.print(f"xAPI feed: statements to the LRS at {lrs}" if lrs else "xAPI feed: on (--service)")
        else:
            out.print("xAPI feed: not run (no LRS: give one with --lrs URL --lrs-user USER; `make demo` starts one)")
        try:
            with _lrs_environment(lrs, lrs_user), _log_to(workdir / "demo.log"), \
                    Live(console=out, refresh_per_second=8, transient=False) as live:
                report = run_demo(config, lambda p: live.update(_render(p, replicas)), timeout=timeout,
                                  chaos=chaos)
        finally:
            if not out.is_terminal:
                out.line()  # a Live that is not on a terminal prints its last state without a newline
        out.print(_summary(report, config))
    except DemoFailed as exc:
        out.print(f"[bold red]demo failed[/bold red]: {exc}")
        out.print(f"(every process was stopped; logs in {workdir})" if not temporary or keep
                  else "(every process was stopped; run with --keep to look at the logs)")
        raise click.exceptions.Exit(1) from None
    except KeyboardInterrupt as exc:
        out.print("[yellow]interrupted[/yellow]: every process was stopped")
        raise click.exceptions.Exit(143 if isinstance(exc, _Terminated) else 130) from None
    except EdbusError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if temporary and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if keep or not temporary:
        out.print(f"databases and logs kept in {workdir}")
    if not report.ok:
        raise click.exceptions.Exit(1)
