"""The package's shape (issue 23): no import cycles, no upward imports, a torch-free planner.

Imports are read from the source with ``ast`` (function-local ones included, since they
are arrows all the same), so the check needs nothing installed and sees every module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"

# Lower layers never import higher ones. A package's modules may import each other.
LAYERS = [
    {"errors", "audio", "utils", "config", "identity", "resources"},
    {"models"},
    {"corpus"},
    {"teacher"},
    {"distill"},
    {"superb"},
    {"report"},
    {"plan"},
    {"cli", "__main__", "runlock"},
]


def modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "deepwide").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            edges[name] |= {t for t in targets if t in mods and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(modules()):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: top-level name {top!r} is in no layer of tests/test_architecture.py")


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, bs in edges.items() if a != "deepwide" for b in bs
                  if b != "deepwide" and layer(b) > layer(a))


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_every_module_has_a_layer_and_no_module_imports_upward():
    edges = import_graph()
    for m in modules():
        if m != "deepwide":
            layer(m)
    assert upward_imports(edges) == []


def test_the_planner_imports_no_torch_and_no_stage_runtime():
    code = (
        "import sys, pkgutil, importlib, deepwide.plan as p\n"
        "for m in pkgutil.walk_packages(p.__path__, 'deepwide.plan.'): importlib.import_module(m.name)\n"
        "heavy = [m for m in ('torch', 's3prl', 'torchaudio', 'numpy', 'pandas') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The checker itself: a known cycle and a known upward arrow are found."""
    edges = {"deepwide.report.a": {"deepwide.plan.b"}, "deepwide.plan.b": {"deepwide.report.a"}}
    assert upward_imports(edges) == ["deepwide.report.a -> deepwide.plan.b"]
