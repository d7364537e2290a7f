"""The module-dependency diagram of docs/architecture.md, generated from the code, and the layer rule it shows.

    python scripts/architecture.py           # rewrite the diagram between the markers of docs/architecture.md
    python scripts/architecture.py --check   # exit 1 if the doc is stale or an import runs back up a layer

Every import statement of src/edbus and services/src/edbus_services is read with ``ast`` (imports inside
functions and under ``TYPE_CHECKING`` included: they are dependencies too) and mapped to its package. The
layers are declared below (LAYERS); an import may only go to a lower layer. Known exceptions (KNOWN) are
drawn in red and listed in the doc until the code is fixed; any other upward or sideways import fails.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edbus": ROOT / "src" / "edbus", "edbus_services": ROOT / "services" / "src" / "edbus_services"}
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- architecture:begin (scripts/architecture.py) -->", "<!-- architecture:end -->"
NESTED = ("edbus.backends", "edbus.contrib")  # packages whose subpackages are nodes of their own

# Lowest first. Nodes of one layer do not import each other; each imports only from the layers below.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("edbus.errors", "edbus._rng")),
    # Record and Message: what both the codec (events) and the backends work with, so neither needs the other
    ("schema · records", ("edbus.schema", "edbus.records")),
    ("backend contract", ("edbus.backends.base",)),
    # events (types, envelope, codec) sit beside the backends: they use edbus.records, no backend
    ("backends · events", ("edbus.backends.sqlite", "edbus.backends.pulsar", "edbus.events")),
    ("backend by URL", ("edbus.backends",)),
    ("bus", ("edbus.bus",)),
    ("public API", ("edbus",)),
    ("adapters", ("edbus.openedx", "edbus.outbox")),
    ("dashboard", ("edbus.dashboard",)),
    ("command line", ("edbus.cli",)),
    ("framework integration", ("edbus.contrib", "edbus.contrib.django", "edbus.contrib.django_outbox")),
    ("services: shared", ("edbus_services", "edbus_services.catalog")),
    ("services", ("edbus_services.xapi",)),
    ("services: commands", ("edbus_services.demo",)),
)

# Imports that break the rule today, with the reason; remove a line when the code no longer does it.
KNOWN: dict[tuple[str, str], str] = {
    ("edbus.dashboard", "edbus.cli"): "the dashboard formats with edbus.cli.output and reads with edbus.cli.common",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Import:
    """One import statement: the module that has it, the line, and the node of each side."""

    module: str
    line: int
    source: str
    target: str


def modules() -> Iterator[tuple[str, Path]]:
    for root, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = (root, *path.relative_to(folder).with_suffix("").parts)
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def node(module: str) -> str:
    """The diagram's node of ``module``: its top-level subpackage or module, one level deeper in NESTED."""
    parts = module.split(".")
    depth = 3 if ".".join(parts[:2]) in NESTED else 2
    return ".".join(parts[:depth])


def module_imports() -> Iterator[tuple[str, int, str]]:
    """(module, line, imported module) for every import of one of PACKAGES' modules."""
    found = dict(modules())
    for module, path in found.items():
        is_package = path.name == "__init__.py"
        for stmt in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(stmt, ast.Import | ast.ImportFrom):
                continue
            targets: list[str] = []
            if isinstance(stmt, ast.Import):
                targets = [alias.name for alias in stmt.names]
            else:
                base = stmt.module or ""
                if stmt.level:
                    anchor = module.split(".")[: len(module.split(".")) - stmt.level + is_package]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from package import submodule` depends on the submodule, `from module import name` on the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in found else base for a in stmt.names]
            for target in targets:
                if target.split(".")[0] in PACKAGES:
                    yield module, stmt.lineno, target


def imports() -> list[Import]:
    result = []
    for module, line, target in module_imports():
        source_node, target_node = node(module), node(target)
        if source_node != target_node:
            result.append(Import(module, line, source_node, target_node))
    return result


def module_cycles() -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (``TYPE_CHECKING`` imports too). A
    module importing its own package is left out: the package's ``__init__`` importing it is no loop back."""
    graph: dict[str, set[str]] = {}
    for module, _, target in module_imports():
        if target != module and not module.startswith(f"{target}."):
            graph.setdefault(module, set()).add(target)
    reach = {m: set(ts) for m, ts in graph.items()}
    changed = True
    while changed:  # transitive closure: a few hundred modules, a few passes
        changed = False
        for targets in reach.values():
            more = set().union(*(reach.get(t, set()) for t in targets)) - targets
            if more:
                targets |= more
                changed = True
    groups = {frozenset({m, *(t for t in ts if m in reach.get(t, set()))}) for m, ts in reach.items() if m in ts}
    return sorted(sorted(g) for g in groups)


def rank() -> dict[str, int]:
    return {name: level for level, (_, nodes) in enumerate(LAYERS) for name in nodes}


def violations(found: list[Import]) -> list[str]:
    """Imports that do not go down a layer and are not KNOWN, nodes no layer places, and stale KNOWN lines."""
    levels, problems = rank(), []
    for name in sorted(({i.source for i in found} | {i.target for i in found}) - set(levels)):
        problems.append(f"{name} is in no layer: add it to LAYERS in scripts/architecture.py")
    for i in found:
        if i.source in levels and i.target in levels and levels[i.target] >= levels[i.source] \
                and (i.source, i.target) not in KNOWN:
            problems.append(f"{i.module}:{i.line} imports {i.target} ({LAYERS[levels[i.target]][0]}) from "
                            f"{i.source} ({LAYERS[levels[i.source]][0]}): not a lower layer")
    edges = {(i.source, i.target) for i in found}
    problems += [f"KNOWN lists {a} -> {b}, which no longer happens: remove it" for a, b in KNOWN if (a, b) not in edges]
    return problems


def mermaid(found: list[Import]) -> str:
    ident = {name: name.replace(".", "_") for _, nodes in LAYERS for name in nodes}
    lines = ["```mermaid", "flowchart TD"]
    for level, (title, nodes) in reversed(list(enumerate(LAYERS))):
        lines.append(f'  subgraph L{level}["{title}"]')
        lines += [f'    {ident[name]}["{name}"]' for name in nodes]
        lines.append("  end")
    edges = sorted({(i.source, i.target) for i in found if i.source in ident and i.target in ident})
    known = []
    for number, (source, target) in enumerate(edges):
        lines.append(f"  {ident[source]} --> {ident[target]}")
        if (source, target) in KNOWN:
            known.append(number)
    if known:
        lines.append(f"  linkStyle {','.join(map(str, known))} stroke:red,stroke-width:2px")
    lines.append("```")
    notes = [f"- `{a}` → `{b}` (red) runs sideways/up: {why}." for (a, b), why in sorted(KNOWN.items())]
    count = f"{len(edges)} package dependencies from {len(found)} import statements; arrows point to what is imported."
    return "\n".join([*lines, "", count, *(["", *notes] if notes else [])])


def render(doc: str, diagram: str) -> str:
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC}: the markers {BEGIN} and {END} are missing")
    head, rest = doc.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{diagram}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the doc is stale or a "
                        "layer is broken")
    args = parser.parse_args(argv)
    found = imports()
    problems = violations(found)
    doc = DOC.read_text(encoding="utf-8")
    wanted = render(doc, mermaid(found))
    for problem in problems:
        print(f"layers: {problem}", file=sys.stderr)
    if args.check:
        if wanted != doc:
            print(f"{DOC.relative_to(ROOT)} is stale: run python scripts/architecture.py", file=sys.stderr)
            return 1
        return 1 if problems else 0
    if wanted != doc:
        DOC.write_text(wanted, encoding="utf-8")
        print(f"wrote the diagram into {DOC.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
