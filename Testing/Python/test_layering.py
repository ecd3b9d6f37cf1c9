"""The engine's floors: no import circles between its modules or packages;
reading a case never reaches into the preparation (composed one floor up, in
running/cases.py); the ways in (frontends/: the commands, the web page) are the
top floor, which no other package imports, and writing the outputs (writing/)
and making synthetic cases (synthetic/) sit below them.  Imports are read from the source with `ast`, those inside
functions (lazy imports) included, relative imports resolved."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

LIB = Path(__file__).resolve().parents[2] / "BrainTumorCNN" / "BrainTumorCNNLib"
ROOT = LIB.name


def module_names() -> Dict[str, Path]:
    """Dotted name inside the library ("reading.io", "reading" for its __init__) -> file."""
    names = {}
    for path in sorted(LIB.rglob("*.py")):
        parts = list(path.relative_to(LIB).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: Set[str]) -> Set[str]:
    """The library modules `name` imports anywhere in its file (module level or in functions)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()

    def add(dotted: str, members=()) -> None:
        if dotted == ROOT or dotted.startswith(ROOT + "."):  # absolute import of the library
            dotted = dotted[len(ROOT) + 1:]
        elif dotted not in modules:
            return  # not the library (numpy, torch...)
        for member in members:
            submodule = f"{dotted}.{member}" if dotted else member
            if submodule in modules:
                found.add(submodule)
                continue
            found.add(dotted)
        if not members:
            found.add(dotted)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(ROOT + "."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                dotted = ".".join(base + ([node.module] if node.module else []))
                add(dotted, [a.name for a in node.names])
            elif node.module and (node.module == ROOT or node.module.startswith(ROOT + ".")):
                add(node.module, [a.name for a in node.names])
    found.discard(name)
    found.discard("")  # `from .. import __version__`: the library's own __init__, which imports nothing
    return found


def import_graph() -> Dict[str, Set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    return module.split(".")[0]


def describe(component: List[str], graph: Dict[str, Set[str]]) -> str:
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
    return f"{', '.join(component)} ({'; '.join(edges)})"


def test_the_parser_sees_module_level_lazy_and_relative_imports():
    graph = import_graph()
    assert "running.pipeline" in graph["frontends.batch"]  # from ..running import inference, pipeline
    assert "reading.io" in graph["learning.sampling"]  # inside a function: from ..reading import io
    assert "network.networks" in graph["network.registry"]  # from . import networks
    assert "labels" in graph["scoring.metrics"]  # from .. import labels as label_table
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_between_modules():
    graph = import_graph()
    found = [describe(c, graph) for c in cycles(graph)]
    assert not found, "import circles between modules: " + " | ".join(found)


def test_no_import_circle_between_packages():
    graph = import_graph()
    packages: Dict[str, Set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(package_of(module), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(module))
    found = [" <-> ".join(c) for c in cycles(packages)]
    assert not found, "import circles between packages: " + " | ".join(found)


def test_reading_a_case_does_not_import_the_preparation():
    graph = import_graph()
    wrong = sorted(f"{m} -> {t}" for m, targets in graph.items() if package_of(m) == "reading"
                   for t in targets if package_of(t) == "preparing")
    assert not wrong, "reading/ imports preparing/ (compose them one floor up): " + ", ".join(wrong)


def upward_imports(graph: Dict[str, Set[str]], package: str, above: Set[str]) -> List[str]:
    """`module -> target` for each import from `package` into one of the packages `above` it."""
    return sorted(f"{m} -> {t}" for m, targets in graph.items() if package_of(m) == package
                  for t in targets if package_of(t) in above)


def test_nothing_imports_the_ways_in():
    graph = import_graph()
    wrong = sorted(f"{m} -> {t}" for m, targets in graph.items() if package_of(m) != "frontends"
                   for t in targets if package_of(t) == "frontends")
    assert not wrong, "frontends/ is imported from below (the ways in are the top floor): " + ", ".join(wrong)


def test_writing_and_synthetic_cases_do_not_import_upward():
    graph = import_graph()
    assert "writing.mrml" in graph["frontends.segment_case"] or "writing.outputs" in graph["frontends.segment_case"]
    assert "synthetic.phantom" in graph["frontends.phantom"]
    for package in ("writing", "synthetic"):
        wrong = upward_imports(graph, package, {"frontends", "learning"})
        assert not wrong, f"{package}/ imports a floor above it: " + ", ".join(wrong)
    wrong = upward_imports(graph, "synthetic", {"writing", "running"})
    assert not wrong, "synthetic/ (cases made from numbers) imports the pipeline or its writers: " + ", ".join(wrong)


def test_upward_imports_are_found():
    graph = {"writing.mrml": {"frontends.cli", "reading.io"}, "frontends.cli": {"writing.mrml"}}
    assert upward_imports(graph, "writing", {"frontends"}) == ["writing.mrml -> frontends.cli"]
