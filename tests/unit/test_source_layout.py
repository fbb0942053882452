"""The library's packages: the README names each module, no module imports itself back, and
every import points down the layers."""

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


#: The layers, bottom first: a module imports only from its own layer and those below.  The
#: top-level modules are the basics; the others stand in their package's layer.
LAYERS = ("basics", "config", "stages", "disk", "guest", "scripts", "docs")
#: The modules that stand elsewhere.  ``cli``, the OS scripts' entry point, runs them, and the
#: other programs share its error policy.  ``disk.filesystems`` declares each filesystem:
#: the FILESYSTEM setting's values are its root filesystems, so it may use the basics only.
PLACED = {"gentoobootstrap.cli": "scripts", "gentoobootstrap.disk.filesystems": "basics"}


def _layer(name: str, placed: dict[str, str]) -> int:
    """The rank of ``name`` (``gentoobootstrap.disk.layout``) in LAYERS."""
    parts = name.split(".")
    package = parts[1] if len(parts) > 1 and parts[1] in LAYERS else "basics"
    return LAYERS.index(placed.get(name, package))


def _upward(graph: dict[str, set[str]], placed: dict[str, str]) -> list[str]:
    """Each import of ``graph`` that reaches a layer above its module's, as "a -> b".

    A package run on the way to one of its modules is judged as that module: the package's
    own imports are its own edges.
    """
    upward = []
    for name, targets in sorted(graph.items()):
        passed = {package for target in targets for package in _ancestors(target)}
        upward += [
            f"{name} -> {target}"
            for target in sorted(targets - passed)
            if _layer(target, placed) > _layer(name, placed)
        ]
    return upward


def test_every_import_points_down_the_layers() -> None:
    known = {_dotted(module) for module in MODULES}
    graph = {
        _dotted(module): _imports(path.read_text(), _dotted(module), known)
        for module, path in MODULES.items()
    }
    assert {name.split(".")[1] for name in known if name.count(".") > 1} == set(LAYERS[1:])
    assert _upward(graph, PLACED) == []


def test_the_layer_check_finds_an_upward_import() -> None:
    known = {"gentoobootstrap", "gentoobootstrap.runner", "gentoobootstrap.cli",
             "gentoobootstrap.disk", "gentoobootstrap.disk.mounts",
             "gentoobootstrap.guest", "gentoobootstrap.guest.tree",
             "gentoobootstrap.scripts", "gentoobootstrap.scripts.create"}  # fmt: skip
    sources = {
        "gentoobootstrap.runner": "import os\n",
        "gentoobootstrap.cli": "from gentoobootstrap.disk import mounts\n",
        "gentoobootstrap.disk.mounts": "from gentoobootstrap.guest.tree import GuestRoot\n",
        "gentoobootstrap.guest.tree": "from gentoobootstrap import runner, scripts\n",
        "gentoobootstrap.scripts.create": "from gentoobootstrap import cli\n",
    }
    graph = {name: _imports(source, name, known) for name, source in sources.items()}
    assert _upward(graph, PLACED) == [
        "gentoobootstrap.disk.mounts -> gentoobootstrap.guest.tree",
        "gentoobootstrap.guest.tree -> gentoobootstrap.scripts",  # a package, imported itself
    ]
    assert _upward(graph, {}) == [  # the entry point, were it a basic
        "gentoobootstrap.cli -> gentoobootstrap.disk.mounts",
        "gentoobootstrap.disk.mounts -> gentoobootstrap.guest.tree",
        "gentoobootstrap.guest.tree -> gentoobootstrap.scripts",
    ]
