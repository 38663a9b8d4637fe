"""The shape of the package, checked (pure and fast): who may import docker, requests, urllib3 and
pynvml; which modules stay free of I/O; no import cycles; no reaching into another module's
`_private` names. Imports inside functions count as much as those at the top."""
import ast
import os
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dockmagic")
ENGINE_ONLY = {"docker", "requests", "urllib3"}
NVML_ONLY = {"pynvml"}
#: Modules that must stay pure: no I/O libraries, no engine, no IPython, no widgets, no NVML.
PURE = ("dockmagic.translate", "dockmagic.cell", "dockmagic.errors", "dockmagic.labels")
IO_MODULES = ENGINE_ONLY | NVML_ONLY | {"IPython", "ipywidgets", "socket", "subprocess",
                                        "dockmagic.engine", "dockmagic.nvml", "dockmagic.runner",
                                        "dockmagic.session", "dockmagic.spare",
                                        "dockmagic.lifecycle", "dockmagic.magics",
                                        "dockmagic.panel", "dockmagic.transfer"}


def _modules():
    """{module name: path} for every module of the package."""
    found = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(folder, f)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            if rel.endswith(".__init__"):
                rel = rel[: -len(".__init__")]
            found[rel] = path
    return found


MODULES = _modules()


def _resolve(module: str, level: int, name: str, is_package: bool) -> str:
    if level == 0:
        return name
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def _imports(module: str, path: str):
    """[(imported module, [names], lineno)] of MODULE, top-level and inside functions."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node.level, node.module or "", is_package)
            names = [a.name for a in node.names]
            out.append((target, names, node.lineno))
            for n in names:  # `from . import session` imports the module dockmagic.session
                if f"{target}.{n}" in MODULES:
                    out.append((f"{target}.{n}", [], node.lineno))
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def _in(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_package_was_found():
    assert "dockmagic.engine" in MODULES and "dockmagic.translate.spec" in MODULES
    assert len(MODULES) > 20


def test_only_the_engine_imports_docker_requests_urllib3():
    bad = [(m, imp, line) for m, p in MODULES.items() for imp, _, line in _imports(m, p)
           if _top(imp) in ENGINE_ONLY and not _in(m, "dockmagic.engine")]
    assert bad == [], f"outside dockmagic/engine: {bad}"


def test_only_nvml_imports_pynvml():
    bad = [(m, imp, line) for m, p in MODULES.items() for imp, _, line in _imports(m, p)
           if _top(imp) in NVML_ONLY and m != "dockmagic.nvml"]
    assert bad == [], bad


@pytest.mark.parametrize("pure", PURE)
def test_pure_modules_import_no_io(pure):
    bad = []
    for m, p in MODULES.items():
        if not _in(m, pure):
            continue
        for imp, _, line in _imports(m, p):
            if any(_in(imp, io) for io in IO_MODULES):
                bad.append((m, imp, line))
    assert bad == [], bad


def _graph():
    graph = {m: set() for m in MODULES}
    for m, p in MODULES.items():
        for imp, _, _ in _imports(m, p):
            if imp in MODULES and imp != m:
                graph[m].add(imp)
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _without_package_inits(graph):
    # A package's __init__ re-exporting its own submodules is not a cycle of ownership: a
    # submodule importing a sibling through the package (`from . import x`) resolves to x.
    return {m: {t for t in ts if not (MODULES[t].endswith("__init__.py") and _in(m, t))}
            for m, ts in graph.items()}


def test_no_import_cycles():
    assert _cycles(_without_package_inits(_graph())) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def _package_of(module: str) -> str:
    return module if MODULES[module].endswith("__init__.py") else module.rsplit(".", 1)[0]


def _shares_package(module: str, other: str) -> bool:
    # inside one sub-package (translate/, engine/) its modules share their private names
    pkg = _package_of(module)
    return pkg != "dockmagic" and _in(other, pkg)


def _module_aliases(module: str, path: str) -> dict:
    """{local name: dockmagic module} for names a module binds to dockmagic modules."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node.level, node.module or "", is_package)
            for a in node.names:
                full = f"{target}.{a.name}"
                if full in MODULES:
                    out[a.asname or a.name] = full
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    out[a.asname] = a.name
    return out, tree


def test_no_module_imports_another_modules_private_names():
    bad = []
    for m, p in MODULES.items():
        for imp, names, line in _imports(m, p):
            if not _in(imp, "dockmagic") or imp == m or _shares_package(m, imp):
                continue
            bad += [(m, f"{imp}.{n}", line) for n in names
                    if n.startswith("_") and not n.startswith("__")]
        aliases, tree = _module_aliases(m, p)
        for node in ast.walk(tree):  # `translate._split_volume(...)`
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and not _shares_package(m, aliases[node.value.id])):
                bad.append((m, f"{aliases[node.value.id]}.{node.attr}", node.lineno))
    assert bad == [], bad
