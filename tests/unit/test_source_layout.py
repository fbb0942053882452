"""The library's packages: the README names each module, and no module imports itself back."""

from __future__ import annotations

import ast
import re

from support import REPO, library_modules

MODULES = library_modules()


def _readme_library_list() -> list[str]:
    """The names the README's "Layout of the source" lists under ``python/gentoobootstrap/``."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout of the source\n", 1)[1]
    block = section.split("- `python/gentoobootstrap/`", 1)[1].split("\n- ", 1)[0]
    return re.findall(r"^ +- `([^`]+)` — ", block, re.M)


def _on_disk() -> list[str]:
    """Each package as ``name/`` and each module as ``package.name``, as the README spells them."""
    names = []
    for module in MODULES:
        package, _, last = module.rpartition(".")
        if module == "__init__" or module.startswith("_"):
            continue  # the library itself, and _autoconf, which make generates
        names.append(f"{package}/" if last == "__init__" else module)
    return names


def test_the_readme_names_every_package_and_module_once() -> None:
    listed = _readme_library_list()
    assert sorted(listed) == sorted(set(listed)), "a module is listed twice"
    assert set(listed) == set(_on_disk()), "README's Layout of the source is not the code's"


def _dotted(module: str) -> str:
    """``disk.layout`` → ``gentoobootstrap.disk.layout``; ``disk.__init__`` → the package."""
    parts = ["gentoobootstrap", *module.split(".")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _ancestors(name: str) -> set[str]:
    return {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}


def _imports(source: str, name: str, known: set[str]) -> set[str]:
    """The library modules that importing ``name`` (of ``source``) runs first: what it
    imports and the packages those sit in, but not its own packages, already running."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    found |= {package for module in found for package in _ancestors(module)}
    return (found & known) - _ancestors(name) - {name}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (module → the modules it imports), or []."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name) :], name]
        if name not in done:
            for target in sorted(graph[name]):
                if cycle := visit(target, [*path, name]):
                    return cycle
            done.add(name)
        return []

    for name in sorted(graph):
        if cycle := visit(name, []):
            return cycle
    return []


def test_no_import_cycle() -> None:
    known = {_dotted(module) for module in MODULES}
    graph = {
        _dotted(module): _imports(path.read_text(), _dotted(module), known)
        for module, path in MODULES.items()
    }
    assert graph["gentoobootstrap.scripts.create"] >= {
        "gentoobootstrap.disk",
        "gentoobootstrap.disk.devices",
        "gentoobootstrap.guest.configure",
    }
    assert _cycle(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    known = {"p", "p.a", "p.b", "p.q", "p.q.c"}
    graph = {
        "p.a": _imports("from p import b\n", "p.a", known),
        "p.b": _imports("import os\nfrom p.q.c import f\n", "p.b", known),
        "p.q.c": _imports("from p import a, paths\n", "p.q.c", known),
        "p.q": set(),
        "p": set(),
    }
    assert graph["p.b"] == {"p.q", "p.q.c"}
    assert graph["p.q.c"] == {"p.a"}  # p (importing p.q.c's own packages) is no edge
    assert _cycle(graph) == ["p.a", "p.b", "p.q.c", "p.a"]
