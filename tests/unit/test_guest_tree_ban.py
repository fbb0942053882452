"""No raw path operation on a guest tree outside gentoobootstrap.guest.tree.

A guest's tree is reached through :class:`~gentoobootstrap.guest.tree.GuestRoot`
only (its docstring says why).  This test reads every module of the library and
refuses what would bypass it:

- a path joined onto a guest root: ``target / "etc"``, ``os.path.join(target, ...)``,
  ``f"{target}/etc"`` (the library names guest roots ``target`` and ``top``);
- a filesystem call on what ``GuestRoot.path()`` returned, directly
  (``root.path("/etc").is_dir()``) or through a name it was assigned to.

It knows guest roots by name, so it is a tripwire, not a proof.  An exception
is a function listed in :data:`REVIEWED` with the reason it is safe.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from support import library_modules

#: The names the library gives a guest's root directory (a variable or an attribute).
GUEST_ROOTS = {"target", "top"}

#: (module, function) -> why its raw path operations on a guest tree are allowed; no new
#: entry without a reason that makes it safe.
REVIEWED = {
    ("scripts.install", "mount_filesystems"): (
        "the root filesystem is empty, made by mkfs just before"
    ),
}


def _is_guest_root(node: ast.expr) -> bool:
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        node = node.left
    if isinstance(node, ast.Name):
        return node.id in GUEST_ROOTS
    return isinstance(node, ast.Attribute) and node.attr in GUEST_ROOTS


def _is_guest_path_call(node: ast.expr) -> bool:
    """``something.path(...)``: GuestRoot.path (no other ``path`` method is called)."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "path"
    )


def _on_resolved(node: ast.AST, resolved: set[str]) -> bool:
    """A method of, or ``os.*``/``shutil.*``/``open`` on, what GuestRoot.path() returned."""

    def is_resolved(value: ast.expr) -> bool:
        return _is_guest_path_call(value) or (isinstance(value, ast.Name) and value.id in resolved)

    if isinstance(node, ast.Attribute):
        return is_resolved(node.value)
    if isinstance(node, ast.Call):
        name = ast.unparse(node.func)
        return (name == "open" or name.startswith(("os.", "shutil."))) and any(
            is_resolved(a) for a in node.args
        )
    return False


def _raw_operations(function: ast.AST) -> Iterator[tuple[int, str]]:
    resolved = {  # names bound to what GuestRoot.path returned
        t.id
        for n in ast.walk(function)
        if isinstance(n, ast.Assign) and _is_guest_path_call(n.value)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    inner = set()  # the left parts of joins already reported whole
    for node in ast.walk(function):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and _is_guest_root(node.left)
        ):
            inner.add(id(node.left))
            if id(node) in inner:
                continue
            yield node.lineno, f"path joined onto a guest root: {ast.unparse(node)}"
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.join":
            if node.args and _is_guest_root(node.args[0]):
                yield node.lineno, f"path joined onto a guest root: {ast.unparse(node)}"
        elif isinstance(node, ast.JoinedStr) and len(node.values) > 1:
            first, second = node.values[0], node.values[1]
            if (
                isinstance(first, ast.FormattedValue)
                and _is_guest_root(first.value)
                and isinstance(second, ast.Constant)
                and str(second.value).startswith("/")
            ):
                yield node.lineno, f"path joined onto a guest root: {ast.unparse(node)}"
        elif _on_resolved(node, resolved):
            yield node.lineno, f"raw operation on GuestRoot.path(): {ast.unparse(node)}"


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """Each top-level function and method by name; the module's own statements as ''."""
    body = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield item.name, item
        else:
            body.append(node)
    yield "", ast.Module(body=body, type_ignores=[])


def violations(source: str, module: str) -> list[str]:
    found = []
    for name, function in _functions(ast.parse(source)):
        if (module, name) in REVIEWED:
            continue
        for line, what in _raw_operations(function):
            found.append(f"{module}:{line}: {name or 'module'}: {what}")
    return sorted(found)


def test_no_raw_path_operation_on_a_guest_tree() -> None:
    found = []
    for module, path in library_modules().items():
        if module != "guest.tree":
            found += violations(path.read_text(), module)
    assert found == [], "use GuestRoot for these:\n" + "\n".join(found)


def test_the_tripwire_trips() -> None:
    source = """
def write_fstab(ctx):
    (ctx.target / "etc" / "fstab").write_text("x")
    shutil.copytree(conf, os.path.join(target, "etc/portage"))
    mounts.bind(Path("/dev"), Path(f"{ctx.target}/dev"))
    etc = root.path("/etc")
    times = etc.stat()
    os.utime(etc, ns=times)
    if root.path("/etc/conf.d").is_dir():
        pass
    mounts.mount(device, target)  # the root itself: fine
    root.write_text("/etc/fstab", "x")  # fine
"""
    assert [v.split(": ", 2)[2] for v in violations(source, "m")] == [
        "path joined onto a guest root: ctx.target / 'etc' / 'fstab'",
        "path joined onto a guest root: os.path.join(target, 'etc/portage')",
        "path joined onto a guest root: f'{ctx.target}/dev'",
        "raw operation on GuestRoot.path(): etc.stat",
        "raw operation on GuestRoot.path(): os.utime(etc, ns=times)",
        "raw operation on GuestRoot.path(): root.path('/etc/conf.d').is_dir",
    ]
    assert Path(__file__).name == "test_guest_tree_ban.py"  # named in guest.tree's docstring


def test_every_reviewed_exception_is_still_needed() -> None:
    """An exception whose function no longer bypasses GuestRoot would hide a new one."""
    needed = set()
    for module, path in library_modules().items():
        for name, function in _functions(ast.parse(path.read_text())):
            if (module, name) in REVIEWED and any(_raw_operations(function)):
                needed.add((module, name))
    assert needed == set(REVIEWED)
