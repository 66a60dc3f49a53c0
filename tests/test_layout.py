"""The package layout of STYLE.md: no import circle anywhere in spikescan (function-level imports
included) and dependencies pointing one way, ``cli -> train/bench/... -> nn -> ops``."""

from __future__ import annotations

import ast
from pathlib import Path

import spikescan

ROOT = Path(spikescan.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """spikescan modules ``name`` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import sub" imports the submodule when one of that name exists
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
        else:
            continue
        for t in targets:
            if t in known:
                found.add(t)
    # importing a.b.c runs a/__init__ and a/b/__init__ too, except the importer's own ancestors
    with_parents = set()
    for t in found:
        parts = t.split(".")
        for k in range(2, len(parts) + 1):
            anc = ".".join(parts[:k])
            if anc in known and not (name == anc or name.startswith(anc + ".")):
                with_parents.add(anc)
    with_parents.discard(name)
    return with_parents


def _graph():
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_walker_sees_a_circle():
    """The walker is not vacuous: ops.lif imports ops.lif.fused, which imports ops._backend."""
    graph = _graph()
    assert "spikescan.ops.lif.fused" in graph["spikescan.ops.lif"]
    assert "spikescan.ops._backend" in graph["spikescan.ops.lif.fused"]
    assert len(graph) > 60


LAYERS = {  # a layer may import only the layers listed (and itself)
    "spikescan.ops": {"spikescan.defaults", "spikescan.surrogate", "spikescan._checks", "spikescan.ops"},
    "spikescan.nn": {"spikescan.defaults", "spikescan.surrogate", "spikescan._checks", "spikescan.ops", "spikescan.nn"},
}


def test_dependencies_point_down():
    graph = _graph()
    bad = []
    for mod, deps in graph.items():
        for layer, allowed in LAYERS.items():
            if mod == layer or mod.startswith(layer + "."):
                for d in deps:
                    if d == "spikescan" or not any(d == a or d.startswith(a + ".") for a in allowed):
                        bad.append(f"{mod} imports {d}")
    assert not bad, "\n".join(sorted(bad))
