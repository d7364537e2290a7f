"""The ``edbus`` command line, against a temporary embedded store.

In-process through click's CliRunner; the signal and console-script paths in a subprocess. Nothing waits
on a clock: the subprocess tests read the command's output line by line.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import pytest
from click.testing import CliRunner, Result

from edbus import Bus, EventType, Mode, StartAt
from edbus.cli.main import cli

TYPE = "org.openedx.test.thing.happened.v1"


@attrs.frozen
class Thing:
    key: str
    n: int


THING = EventType(TYPE, Thing, key="key")

Run = Callable[..., Result]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'edbus.db'}"


@pytest.fixture
def bus(url: str) -> Iterator[Bus]:
    """The store, created by a Python producer that registers THING's schema."""
    with Bus.from_url(url) as b:
        yield b


@pytest.fixture
def run(url: str) -> Run:
    def invoke(*args: str, input: str | None = None, store: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--url", store or url, *args], input=input,
                                  env={"COLUMNS": "250", "EDBUS_URL": None})
    return invoke


def publish(bus: Bus, count: int, topic: str = "t", start: int = 0) -> list[str]:
    return bus.publish_many(topic, [(THING, Thing("a" if i % 2 else "b", i)) for i in range(start, start + count)])


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stats(run: Run, subscription: str) -> dict[str, Any]:
    found = [s for s in as_json(run("subscriptions", "--json")) if s["subscription"] == subscription]
    assert len(found) == 1
    return found[0]


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def dead_letter(bus: Bus, subscription: str, fail: set[int], events: int) -> None:
    """Run a consumer whose handler fails on ``fail`` with one attempt: those become dead letters."""
    consumer = bus.consumer("t", subscription, max_attempts=1)

    @consumer.handler(THING)
    def handle(event: Any) -> None:
        if event.data.n in fail:
            raise RuntimeError(f"poison {event.data.n}")

    assert consumer.run(max_events=events, install_signals=False) == events


# -- publish and tail ------------------------------------------------------------------------------------
def test_publish_then_tail_shows_the_event(bus: Bus, run: Run) -> None:
    publish(bus, 1)
    result = run("publish", "t", TYPE, "--data", '{"key": "k1", "n": 42}', "--key", "k1", "--id", "evt-1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "evt-1"

    events = [json.loads(line) for line in run("tail", "t", "--json").stdout.splitlines()]
    assert [e["data"]["n"] for e in events] == [0, 42]
    last = events[1]
    assert (last["id"], last["type"], last["key"], last["topic"], last["data"]) == (
        "evt-1", TYPE, "k1", "t", {"key": "k1", "n": 42})

    pretty = run("tail", "t", "--from", "id:evt-1")
    assert pretty.exit_code == 0, pretty.output
    assert TYPE in pretty.stdout and "evt-1" in pretty.stdout and "key=k1" in pretty.stdout
    assert '"n": 42' in pretty.stdout and '"n": 0' not in pretty.stdout


def test_publish_same_id_twice_stores_one_event(bus: Bus, run: Run) -> None:
    publish(bus, 1)
    for _ in range(2):
        assert run("publish", "t", TYPE, "--data", '{"key": "k", "n": 1}', "--id", "same").exit_code == 0
    assert [t["events"] for t in as_json(run("topics", "--json")) if t["topic"] == "t"] == [2]


def test_publish_file_stores_every_line_or_none(bus: Bus, run: Run, tmp_path: Path) -> None:
    publish(bus, 1)
    good = tmp_path / "good.jsonl"
    good.write_text('{"key": "x", "n": 1}\n\n{"key": "y", "n": 2}\n{"key": "z", "n": 3}\n')
    result = run("publish", "t", TYPE, "--file", str(good))
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == 3
    assert [e["id"] for e in map(json.loads, run("tail", "t", "--json").stdout.splitlines())][1:] == ids

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "x", "n": 4}\n{"key": "y", "n": "not a number"}\n')
    assert_one_line_error(run("publish", "t", TYPE, "--file", str(bad)), "line 2")
    assert [t["events"] for t in as_json(run("topics", "--json")) if t["topic"] == "t"] == [4]


def test_tail_limit_and_from_latest(bus: Bus, run: Run) -> None:
    publish(bus, 5)
    assert len(run("tail", "t", "--json", "--limit", "2").stdout.splitlines()) == 2
    latest = run("tail", "t", "--json", "--from", "latest")
    assert latest.exit_code == 0 and latest.stdout == ""


# -- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "fragment"), [
    (["publish", "t", TYPE, "--data", '{"key": "k", "n": '], "not valid JSON"),
    (["publish", "t", TYPE, "--data", "[1, 2]"], "JSON object"),
    (["publish", "t", TYPE, "--data", "[" * 100_000 + "]" * 100_000], "nested too deeply"),
    (["publish", "t", "org.openedx.test.nobody.registered.v1", "--data", "{}"], "unknown event type"),
    (["publish", "t", TYPE, "--data", '{"key": "k"}'], "does not match"),
    (["publish", "bad topic!", TYPE, "--data", '{"key": "k", "n": 1}'], "bad topic name"),
    (["tail", "no-such-topic"], "no topic"),
    (["replay", "t", "no-such-sub", "--to", "earliest"], "no subscription"),
    (["dlq", "list", "t", "no-such-sub"], "no subscription"),
    (["schema", "show", "org.openedx.test.nobody.registered.v1"], "unknown event type"),
    (["schema", "show", TYPE, "--version", "9"], "no schema version 9"),
    (["schema", "rule", "t", "SOMETIMES"], "unknown compatibility rule"),
    (["consume", "t", "s", "--handler", "no_such_module_here:setup"], "cannot import"),
    (["consume", "t", "s", "--handler", "json:no_such_function"], "has no"),
    (["consume", "t", "s", "--handler", "no-colon"], "module:callable"),
    (["consume", "t", "s", "--print", "--from", "yesterday-ish"], "bad start position"),
])
def test_errors_are_one_red_line_and_exit_1_without_traceback(bus: Bus, run: Run, args: list[str],
                                                               fragment: str) -> None:
    publish(bus, 1)
    assert_one_line_error(run(*args), fragment)


@pytest.mark.parametrize("args", [["topics"], ["subscriptions"], ["tail", "t"], ["schema", "list"],
                                  ["publish", "t", TYPE, "--data", "{}"], ["retention"],
                                  ["consume", "t", "s", "--print", "--max-events", "1"]])
def test_missing_store_is_an_error_and_is_not_created(run: Run, tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "nowhere" / "edbus.db"
    assert_one_line_error(run(*args, store=f"sqlite:///{missing}"), "no edbus store")
    assert not missing.exists()


@pytest.mark.parametrize("bad_url", ["mysql://localhost/db", "sqlite://relative-without-slash.db",
                                     "sqlite:///:memory:"])
def test_bad_url_is_an_error(run: Run, bad_url: str) -> None:
    assert_one_line_error(run("topics", store=bad_url), "URL")


@pytest.mark.parametrize("args", [
    ["publish", "t", TYPE],  # no data
    ["publish", "t", TYPE, "--data", "{}", "--file", "-"],
    ["dlq", "purge", "t", "s"],  # neither --all nor --id: never silently everything
    ["dlq", "redrive", "t", "s", "--all", "--id", "x"],
    ["replay", "t", "s"],  # --to is required
    ["replay", "t", "s", "--to", "not-a-position"],
    ["retention", "--older-than", "7 fortnights"],
    ["consume", "t", "s"],  # neither --handler nor --print
])
def test_usage_mistakes_exit_2(bus: Bus, run: Run, args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_url_defaults_to_edbus_url(bus: Bus, url: str, tmp_path: Path) -> None:
    publish(bus, 2)
    result = CliRunner().invoke(cli, ["topics", "--json"], env={"EDBUS_URL": url})
    assert result.exit_code == 0, result.output
    assert [t["events"] for t in json.loads(result.stdout)] == [2]
    missing = CliRunner().invoke(cli, ["topics"], env={"EDBUS_URL": f"sqlite:///{tmp_path / 'other.db'}"})
    assert missing.exit_code == 1 and "other.db" in missing.stderr


def test_every_command_has_help(run: Run) -> None:
    for args in (["--help"], ["publish", "--help"], ["tail", "--help"], ["topics", "--help"],
                 ["subscriptions", "--help"], ["replay", "--help"], ["dlq", "--help"], ["dlq", "show", "--help"],
                 ["dlq", "purge", "--help"], ["consume", "--help"], ["schema", "rule", "--help"],
                 ["retention", "--help"]):
        result = run(*args)
        assert result.exit_code == 0 and "Usage:" in result.stdout, (args, result.output)
    assert "def setup(consumer)" in run("consume", "--help").stdout


# -- topics, subscriptions, replay ---------------------------------------------------------------------
def test_topics_table_and_json(bus: Bus, run: Run) -> None:
    publish(bus, 3)
    bus.backend.subscribe("t", "s", Mode.SHARED, StartAt("earliest"))
    [topic] = as_json(run("topics", "--json"))
    assert topic["topic"] == "t" and topic["events"] == 3 and topic["subscriptions"] == 1 and topic["bytes"] > 0
    table = run("topics").stdout
    assert "topic" in table and "subscriptions" in table and "│ t " in table


def test_subscriptions_report_backlog_in_flight_and_consumers(bus: Bus, run: Run) -> None:
    publish(bus, 5)
    bus.backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt("earliest"))
    bus.backend.subscribe("t", "late", Mode.SHARED, StartAt("latest"))
    leased = bus.backend.fetch("t", "s", "worker-1", 2, 60.0)
    assert len(leased) == 2
    s = stats(run, "s")
    assert (s["backlog"], s["in_flight"], s["dead_lettered"], s["consumers"], s["mode"]) == (5, 2, 0, 1, "key_ordered")
    assert s["oldest_unacked_age"] >= 0
    late = stats(run, "late")
    assert (late["backlog"], late["in_flight"], late["mode"], late["oldest_unacked_age"]) == (0, 0, "shared", None)
    bus.backend.ack(leased)
    assert stats(run, "s")["backlog"] == 3

    table = run("subscriptions", "t")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if "│ s " in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]][:6] == ["t", "s", "key_ordered", "3", "0", "0"]


def test_replay_moves_the_cursor_and_the_backlog_grows_back(bus: Bus, run: Run) -> None:
    ids = publish(bus, 5)
    consumer = bus.consumer("t", "s")
    consumer.add(THING, lambda event: None)
    assert consumer.run(max_events=5, install_signals=False) == 5
    assert stats(run, "s")["backlog"] == 0

    result = run("replay", "t", "s", "--to", "earliest")
    assert result.exit_code == 0, result.output
    assert "backlog 0 -> 5" in result.stdout
    assert stats(run, "s")["backlog"] == 5

    assert "backlog 5 -> 0" in run("replay", "t", "s", "--to", "latest").stdout
    assert "backlog 0 -> 3" in run("replay", "t", "s", "--to", f"id:{ids[2]}").stdout
    assert "backlog 3 -> 5" in run("replay", "t", "s", "--to", "2000-01-01T00:00:00").stdout
    assert_one_line_error(run("replay", "t", "s", "--to", "id:no-such-event"), "no event")


def test_unsubscribe_deletes_the_subscription_after_confirmation(bus: Bus, run: Run) -> None:
    publish(bus, 2)
    bus.backend.subscribe("t", "old", Mode.SHARED, StartAt())
    assert run("unsubscribe", "t", "old", input="n\n").exit_code == 1  # declined: kept
    assert [s.subscription for s in bus.backend.subscriptions("t")] == ["old"]
    result = run("unsubscribe", "t", "old", "--yes")
    assert result.exit_code == 0 and "2 unacked event(s) released" in result.stdout
    assert bus.backend.subscriptions("t") == []
    assert_one_line_error(run("unsubscribe", "t", "old", "--yes"), "no subscription")


# -- dead letters --------------------------------------------------------------------------------------
def test_dlq_list_show_redrive_purge_round_trip(bus: Bus, run: Run) -> None:
    ids = publish(bus, 4)
    dead_letter(bus, "s", fail={1, 2}, events=4)
    assert stats(run, "s")["dead_lettered"] == 2

    listed = as_json(run("dlq", "list", "t", "s", "--json"))
    assert sorted(d["id"] for d in listed) == sorted([ids[1], ids[2]])
    assert {(d["attempts"], d["error_type"]) for d in listed} == {(1, "builtins.RuntimeError")}
    assert sorted(d["error_message"] for d in listed) == ["poison 1", "poison 2"]
    table = run("dlq", "list", "t", "s").stdout
    assert ids[1] in table and ids[2] in table and "poison 1" in table and "builtins.RuntimeError" in table

    shown = as_json(run("dlq", "show", "t", "s", ids[1], "--json"))
    assert shown["error_message"] == "poison 1" and "RuntimeError: poison 1" in shown["traceback"]
    assert [(h["attempt"], h["message"]) for h in shown["history"]] == [(1, "poison 1")]
    assert shown["event"]["data"] == {"key": "a", "n": 1} and shown["headers"]["ce_type"] == TYPE
    assert not any(k.startswith("edbus_dlq_") for k in shown["headers"])
    pretty = run("dlq", "show", "t", "s", ids[1]).stdout
    for fragment in ("attempt history", "traceback", "poison 1", '"n": 1', "ce_id"):
        assert fragment in pretty
    assert_one_line_error(run("dlq", "show", "t", "s", ids[0]), "no dead letter")

    assert_one_line_error(run("dlq", "redrive", "t", "s", "--id", ids[1], "--id", "nope"), "nope")
    assert stats(run, "s")["dead_lettered"] == 2  # nothing done
    redriven = run("dlq", "redrive", "t", "s", "--id", ids[1])
    assert redriven.exit_code == 0 and "redrove 1" in redriven.stdout
    s = stats(run, "s")
    assert (s["dead_lettered"], s["backlog"]) == (1, 1)

    declined = run("dlq", "purge", "t", "s", "--all", input="n\n")
    assert declined.exit_code == 1 and stats(run, "s")["dead_lettered"] == 1
    purged = run("dlq", "purge", "t", "s", "--all", input="y\n")
    assert purged.exit_code == 0 and "purged 1" in purged.stdout
    assert as_json(run("dlq", "list", "t", "s", "--json")) == []


def test_dlq_purge_by_id_with_yes_keeps_the_others(bus: Bus, run: Run) -> None:
    ids = publish(bus, 3)
    dead_letter(bus, "s", fail={0, 1, 2}, events=3)
    result = run("dlq", "purge", "t", "s", "--id", ids[0], "--yes")
    assert result.exit_code == 0 and "purged 1" in result.stdout
    assert sorted(d["id"] for d in as_json(run("dlq", "list", "t", "s", "--json"))) == sorted(ids[1:])
    assert "redrove 2" in run("dlq", "redrive", "t", "s", "--all").stdout
    assert (stats(run, "s")["dead_lettered"], stats(run, "s")["backlog"]) == (0, 2)


def test_tail_reads_a_dead_letter_topic(bus: Bus, run: Run) -> None:
    ids = publish(bus, 2)
    dead_letter(bus, "s", fail={1}, events=2)
    events = [json.loads(line) for line in run("tail", "t.s.dlq", "--json").stdout.splitlines()]
    assert [e["id"] for e in events] == [ids[1]]


# -- consume -------------------------------------------------------------------------------------------
HANDLERS = '''
    import json

    import attrs

    from edbus import EventType

    @attrs.frozen
    class Thing:  # the consuming service's own copy of the payload class
        key: str
        n: int

    THING = EventType("org.openedx.test.thing.happened.v1", Thing, key="key")
    OUT = {out!r}

    def record(event):
        with open(OUT, "a") as f:
            f.write(json.dumps([event.key, event.data.n, event.attempt]) + "\\n")

    def setup(consumer):
        consumer.add(THING, record)

    def setup_nothing(consumer):
        pass

    def setup_fallback(consumer):
        def record_any(event):  # a fallback gets the data as the writer's schema decodes it: a dict
            with open(OUT, "a") as f:
                f.write(json.dumps([event.key, event.data["n"], event.attempt]) + "\\n")
        consumer.add_fallback(record_any)

    def setup_crash(consumer):
        raise KeyError("boom")
'''


@pytest.fixture
def handler_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> tuple[str, Path]:
    """A handler module written into tmp_path (importable under a name unique to the test)."""
    name = f"cli_handlers_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    out = tmp_path / "handled.jsonl"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(HANDLERS.format(out=str(out))))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name, out


def test_consume_runs_the_handler_module_until_max_events(bus: Bus, run: Run, handler_module: tuple[str, Path]) -> None:
    name, out = handler_module
    publish(bus, 4)
    result = run("consume", "t", "s", "--handler", f"{name}:setup", "--max-events", "4", "--concurrency", "2",
                 "--idle-exit", "20")
    assert result.exit_code == 0, result.output
    handled = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(handled) == [["a", 1, 1], ["a", 3, 1], ["b", 0, 1], ["b", 2, 1]]
    assert [n for key, n, _ in handled if key == "a"] == [1, 3]  # per-key order
    assert stats(run, "s")["backlog"] == 0


def test_consume_runs_a_handler_module_that_registers_only_a_fallback(bus: Bus, run: Run,
                                                                      handler_module: tuple[str, Path]) -> None:
    name, out = handler_module
    publish(bus, 2)
    result = run("consume", "t", "s", "--handler", f"{name}:setup_fallback", "--max-events", "2", "--idle-exit", "20")
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2


def test_consume_handler_that_registers_nothing_or_crashes_is_one_line_error(
        bus: Bus, run: Run, handler_module: tuple[str, Path]) -> None:
    name, _ = handler_module
    assert_one_line_error(run("consume", "t", "s", "--handler", f"{name}:setup_nothing"), "registered no handler")
    assert_one_line_error(run("consume", "t", "s", "--handler", f"{name}:setup_crash"), "KeyError", "boom")


def test_consume_idle_exit_returns_once_the_backlog_is_drained(bus: Bus, run: Run) -> None:
    ids = publish(bus, 2)
    result = run("consume", "t", "s", "--print", "--json", "--idle-exit", "0")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(line)["id"] for line in result.stdout.splitlines()) == sorted(ids)
    assert stats(run, "s")["backlog"] == 0
    again = run("consume", "t", "s", "--print", "--json", "--idle-exit", "0")
    assert again.exit_code == 0 and again.stdout == ""


def test_consume_print_prints_and_acks_every_event(bus: Bus, run: Run) -> None:
    ids = publish(bus, 3)
    result = run("consume", "t", "s", "--print", "--json", "--max-events", "3", "--mode", "shared")
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(e["id"] for e in printed) == sorted(ids)
    assert all(e["type"] == TYPE and e["attempt"] == 1 for e in printed)
    s = stats(run, "s")
    assert (s["backlog"], s["mode"], s["dead_lettered"]) == (0, "shared", 0)

    publish(bus, 1, start=3)
    pretty = run("consume", "t", "s", "--print", "--max-events", "1", "--mode", "shared")
    assert pretty.exit_code == 0 and TYPE in pretty.stdout and '"n": 3' in pretty.stdout


# -- schema, retention ---------------------------------------------------------------------------------
def test_schema_list_show_and_rule(bus: Bus, run: Run) -> None:
    publish(bus, 1)
    [listed] = as_json(run("schema", "list", "--json"))
    assert (listed["event_type"], listed["versions"], listed["latest"]) == (TYPE, [1], 1)
    assert TYPE in run("schema", "list").stdout

    schema = as_json(run("schema", "show", TYPE))
    assert schema == THING.schema
    assert as_json(run("schema", "show", TYPE, "--version", "1")) == schema

    assert run("schema", "rule", "t").stdout.strip() == "t: FORWARD (the default)"
    assert run("schema", "rule", "t", "full_transitive").stdout.strip() == "t: FULL_TRANSITIVE"
    assert run("schema", "rule", "t").stdout.strip() == "t: FULL_TRANSITIVE"


def test_schema_rule_can_be_set_before_the_store_exists(run: Run, tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert run("schema", "rule", "t", "NONE", store=fresh).exit_code == 0
    assert run("schema", "rule", "t", store=fresh).stdout.strip() == "t: NONE"


def test_retention_deletes_only_old_events_every_subscription_acked(bus: Bus, run: Run) -> None:
    publish(bus, 3)
    bus.backend.subscribe("t", "slow", Mode.SHARED, StartAt("earliest"))
    consumer = bus.consumer("t", "fast")
    consumer.add(THING, lambda event: None)
    consumer.run(max_events=3, install_signals=False)

    assert run("retention", "--older-than", "1h").stdout.strip().startswith("deleted 0 ")
    assert run("retention", "--older-than", "0s").stdout.strip().startswith("deleted 0 ")  # slow has not acked
    slow = bus.consumer("t", "slow", mode="shared")
    slow.add(THING, lambda event: None)
    slow.run(max_events=3, install_signals=False)
    assert run("retention", "--older-than", "0").stdout.strip().startswith("deleted 3 ")
    assert [t["events"] for t in as_json(run("topics", "--json")) if t["topic"] == "t"] == [0]


# -- as a process: the console script, signals ---------------------------------------------------------
def edbus(url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "250"}
    env.pop("EDBUS_URL", None)
    return subprocess.Popen([sys.executable, "-m", "edbus.cli.main", "--url", url, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)


class Lines:
    """Read a child's stdout line by line, failing (not hanging) if a line does not come."""

    def __init__(self, proc: subprocess.Popen[bytes], stream: IO[bytes] | None = None, timeout: float = 15.0) -> None:
        stream = stream or proc.stdout
        assert stream is not None
        self.proc, self.stream, self.timeout, self.buffer = proc, stream, timeout, b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stream, selectors.EVENT_READ)

    def next(self) -> str:
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                self.proc.kill()
                raise AssertionError(f"no output line within {self.timeout}s; got {self.buffer!r}")
            chunk = os.read(self.stream.fileno(), 65536)
            if not chunk:
                err = self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"the process ended ({self.proc.wait()}): {err!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err.decode()


def test_tail_follow_prints_new_events_and_exits_0_on_sigterm(bus: Bus, url: str) -> None:
    first = publish(bus, 1)
    proc = edbus(url, "tail", "t", "--follow", "--json")
    lines = Lines(proc)
    assert json.loads(lines.next())["id"] == first[0]
    later = publish(bus, 2, start=1)  # published while it follows
    assert [json.loads(lines.next())["id"] for _ in later] == later
    code, err = stop(proc)
    assert code == 0 and "Traceback" not in err


def test_tail_follow_from_latest_prints_only_events_published_after_it_started(bus: Bus, url: str) -> None:
    publish(bus, 2)
    proc = edbus(url, "tail", "t", "-f", "--from", "latest", "--json")
    assert proc.stderr is not None
    assert Lines(proc, proc.stderr).next().startswith("following t from now on")
    later = publish(bus, 1, start=2)
    assert json.loads(Lines(proc).next())["id"] == later[0]
    code, err = stop(proc)
    assert code == 0 and "Traceback" not in err


def test_consume_print_exits_0_on_sigterm(bus: Bus, url: str) -> None:
    ids = publish(bus, 1)
    proc = edbus(url, "consume", "t", "s", "--print", "--json")
    assert json.loads(Lines(proc).next())["id"] == ids[0]
    code, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err and "stopped after 1 event(s)" in err


def test_console_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = edbus(f"sqlite:///{tmp_path / 'missing.db'}", "topics")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and out == b""
    [line] = err.decode().splitlines()
    assert line.startswith(f"error: no edbus store at {tmp_path / 'missing.db'}")
