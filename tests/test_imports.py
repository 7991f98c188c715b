"""No import cycle anywhere in salmask, function-local imports counted: a lazy import hides a cycle, it does not
remove it. The top-level ``salmask`` package, which imports nothing until asked, is the one exception."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files() -> dict[str, Path]:
    out = {}
    for path in (SRC / "salmask").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The salmask modules ``module`` imports anywhere in its body, with the packages that importing them runs."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    deps = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        parts = name.split(".") if name else []
        for k in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            dep = ".".join(parts[:k])
            if dep in modules and dep != module and not module.startswith(dep + "."):
                deps.add(dep)
    return deps - {"salmask"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    modules = module_files()
    graph = {m: imported(m, p, modules) for m, p in modules.items() if m != "salmask"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_lazy_cycle(tmp_path):
    """The test above can fail: a function-local import that closes a circle is reported."""
    pkg = tmp_path / "salmask"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from salmask.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from salmask import a\n    return a\n")
    modules = {"salmask": pkg / "__init__.py", "salmask.a": pkg / "a.py", "salmask.b": pkg / "b.py"}
    graph = {m: imported(m, p, modules) for m, p in modules.items() if m != "salmask"}
    assert find_cycle(graph) in (["salmask.a", "salmask.b", "salmask.a"], ["salmask.b", "salmask.a", "salmask.b"])
