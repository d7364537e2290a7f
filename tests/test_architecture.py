"""The layering of docs/architecture.md holds in the code, its diagram is current, and the library never
imports the example services (edbus-services)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import architecture  # noqa: E402


def test_no_import_runs_back_up_a_layer_and_every_package_has_a_layer():
    assert architecture.violations(architecture.imports()) == []


def test_the_diagram_in_docs_architecture_is_what_the_code_generates():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "architecture.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_no_module_of_the_library_imports_the_services():
    found = [i for i in architecture.imports() if i.source.startswith("edbus.") or i.source == "edbus"]
    assert found and not [i for i in found if i.target.startswith("edbus_services")]
    texts = [p for p in (ROOT / "src" / "edbus").rglob("*.py")
             if "edbus_services" in p.read_text(encoding="utf-8") or "edbus.apps" in p.read_text(encoding="utf-8")]
    assert texts == []


def test_events_import_nothing_from_the_backends_records_come_from_a_module_below_both():
    found = architecture.imports()
    events = [i for i in found if i.source == "edbus.events"]
    assert events and [i for i in events if i.target == "edbus.records"]
    assert [f"{i.module}:{i.line} -> {i.target}" for i in events if i.target.startswith("edbus.backends")] == []
    from edbus.backends import Message, Record
    from edbus.records import Message as NeutralMessage
    from edbus.records import Record as NeutralRecord

    assert (Record, Message) == (NeutralRecord, NeutralMessage)  # re-exported, one class each


def test_the_consumer_gets_its_dependencies_from_the_bus_without_importing_it():
    cycles = architecture.module_cycles()
    assert [c for c in cycles if "edbus.bus.consumer" in c] == []
    consumer = {t for m, _, t in architecture.module_imports() if m == "edbus.bus.consumer"}
    assert "edbus.bus.bus" not in consumer and "edbus.events.codec" in consumer


def test_no_module_of_the_library_or_the_services_imports_itself_round_a_loop():
    assert architecture.module_cycles() == []
