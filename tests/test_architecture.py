"""The package's shape, checked statically: imports go one way (no cycles), no module imports another module's
private names, diffusers internals are touched only in the listed modules, and the pure core stays free of torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lemica"
# The modules that may touch diffusers internals, each with why.
DIFFUSERS_INTERNALS = {
    "lemica.runtime.diffusers_compat": "lemica's own hooks: block-list names, block layouts, the cache context",
    "lemica.bench.diffusers_peers": "diffusers' peer caches run as their authors run them (per-branch state, "
                                    "TaylorSeer's official steps); bench only",
}
PURE_CORE = ("lemica.errors", "lemica.rules", "lemica.graph", "lemica.schedule", "lemica.planner", "lemica.presets",
             "lemica._io", "lemica.bench.methods", "lemica.cli.bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement, wherever it sits in the file."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


def _edges(name: str) -> set[str]:
    """lemica modules that ``name`` imports (``from pkg import submodule`` counts as importing the submodule)."""
    out = set()
    for module, names, _ in _imports(name):
        if not (module == "lemica" or module.startswith("lemica.")):
            continue
        subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
        out.update(subs or [module])
        if subs and len(subs) < len(names):
            out.add(module)
    return {m for m in out if m in MODULES and m != name}


def test_every_module_parses_and_is_found():
    assert "lemica.runtime.hooks" in MODULES and "lemica.cli.app" in MODULES and "lemica.calibration.jobs" in MODULES


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first search, as the cycle it closes (empty: the graph is acyclic)."""
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_the_cycle_check_finds_a_planted_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles_inside_lemica():
    cycles = find_cycles({name: _edges(name) for name in MODULES})
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names():
    offences = []
    for name in MODULES:
        for module, names, line in _imports(name):
            if module == "lemica" or module.startswith("lemica."):
                offences += [f"{name}:{line} imports {module}.{n}" for n in names
                             if n.startswith("_") and not n.startswith("__")]
    assert not offences, offences


def test_diffusers_internals_are_touched_in_the_listed_modules_only():
    assert set(DIFFUSERS_INTERNALS) <= set(MODULES)
    offences = []
    for name in MODULES:
        if name in DIFFUSERS_INTERNALS:
            continue
        for module, names, line in _imports(name):
            if module.split(".")[0] != "diffusers":
                continue
            private = [p for p in module.split(".") if p.startswith("_")] + [n for n in names if n.startswith("_")]
            if private:
                offences.append(f"{name}:{line} uses diffusers internals {private} ({module})")
    assert not offences, offences


def test_commands_import_down_only():
    """cli.app -> command modules -> cli._common -> library: the library never imports the command line."""
    for name in MODULES:
        if name.startswith("lemica.cli") or name == "lemica.__main__":  # the entry point runs the command line
            continue
        assert not any(m.startswith("lemica.cli") for m in _edges(name)), f"{name} imports the command line"
    assert not any(m in ("lemica.cli.plan", "lemica.cli.run", "lemica.cli.bench", "lemica.cli.app")
                   for m in _edges("lemica.cli._common"))


@pytest.mark.parametrize("name", PURE_CORE)
def test_pure_core_imports_no_torch(name):
    code = f"import sys, {name}; bad = [m for m in ('torch', 'diffusers') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{name} pulls in {out.strip()}"
