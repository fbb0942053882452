"""What every install image of the OS definition must hold, whoever built it.

``make install``, the ebuild and the Debian package each produce an image
(a DESTDIR tree); :func:`check_image` asserts the layout Ganeti and the admin
rely on and returns what it found, so callers can compare images.
"""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

OS_NAME = "gentoobootstrap"
SCRIPTS = ("create", "export", "import", "rename", "verify")
PACKAGE = "ganeti-instance-gentoobootstrap"


@dataclass(frozen=True)
class Layout:
    """Where configure was told to put things (paths inside the image)."""

    os_dir: str = "/usr/share/ganeti/os"
    sysconfdir: str = "/etc"
    localstatedir: str = "/var"
    pylibdir: str = f"/usr/share/{PACKAGE}/python"


def inside(image: Path, path: str) -> Path:
    return image / path.lstrip("/")


def resolve(image: Path, path: Path) -> Path:
    """Follow symlinks the way the installed system would, staying inside the image."""
    for _ in range(10):
        if not path.is_symlink():
            return path
        target = Path(path.readlink())
        path = (
            inside(image, str(target))
            if target.is_absolute()
            else Path(os.path.normpath(path.parent / target))
        )
    raise AssertionError(f"symlink loop at {path}")


def autoconf_values(image: Path, layout: Layout) -> dict[str, str]:
    """The constants of the installed ``_autoconf.py`` (read, not imported)."""
    source = inside(image, f"{layout.pylibdir}/gentoobootstrap/_autoconf.py").read_text()
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = str(node.value.value)
    return values


def check_image(image: Path, layout: Layout, shebang: str) -> dict[str, int]:
    """Assert the OS definition, library and configuration in ``image``.

    Returns the OS directory's entries with their permission bits.
    """
    os_path = inside(image, f"{layout.os_dir}/{OS_NAME}")
    assert os_path.is_dir(), f"no OS directory {os_path}"

    for script in SCRIPTS:
        path = os_path / script
        mode = path.stat().st_mode
        assert stat.S_ISREG(mode) and mode & 0o111 == 0o111, f"{script} is not executable"
        first = path.read_text().splitlines()[0]
        assert first == f"#!{shebang}", f"{script} starts {first!r}, expected #!{shebang}"

    api = (os_path / "ganeti_api_version").read_text().split()
    assert api and all(v.isdigit() for v in api), f"ganeti_api_version holds {api}"
    assert "20" in api, "the export/import/rename interface needs OS API version 20"
    parameters = (os_path / "parameters.list").read_text().splitlines()
    assert any(line.split()[0] == "filesystem" for line in parameters if line.strip())
    variants = resolve(image, os_path / "variants.list")
    assert "default" in variants.read_text().split(), f"{variants} does not list default"

    values = autoconf_values(image, layout)
    assert values["OS_DIR"] == layout.os_dir
    assert values["SYSCONFDIR"] == layout.sysconfdir
    assert values["LOCALSTATEDIR"] == layout.localstatedir

    conf = inside(image, f"{layout.sysconfdir}/ganeti")
    assert (conf / PACKAGE).is_file(), "no defaults file"
    assert (conf / "instance-gentoobootstrap" / "variants" / "default.conf").is_file()
    assert (conf / "instance-gentoobootstrap" / "hooks").is_dir()
    hooks = conf / "instance-gentoobootstrap" / "hooks"
    executable = [p for p in hooks.rglob("*") if p.is_file() and p.stat().st_mode & 0o111]
    assert not executable, f"executable files in the hooks directory would run: {executable}"

    return {p.name: p.lstat().st_mode for p in sorted(os_path.iterdir()) if p.name != "__pycache__"}


def run_installed_script(image: Path, layout: Layout, script: str) -> tuple[int, str]:
    """Run an installed OS script with the image's library and no Ganeti environment."""
    path = inside(image, f"{layout.os_dir}/{OS_NAME}/{script}")
    result = subprocess.run(
        [sys.executable, str(path)],
        env={"PYTHONPATH": str(inside(image, layout.pylibdir)), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr
