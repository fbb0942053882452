"""``make install``, ``make try``, ``make uninstall`` in sequence, as the README has it.

The try command adds a demo variant only while it runs: the installed
configuration is as it was afterwards, and ``make uninstall`` then removes every
file and directory ``make install`` made.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pkgbuild import copy_source, require

from support.install import run_step

pytestmark = [pytest.mark.root, pytest.mark.slow]


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_make_try_leaves_the_installed_configuration_as_it_was(tmp_path: Path) -> None:
    for tool in ("autoreconf", "make"):
        require(tool)
    src = copy_source(tmp_path / "src", "0.0.0")
    run_step(["./autogen.sh"], src, {"PYTHON": sys.executable})
    build = tmp_path / "build"
    build.mkdir()
    root = tmp_path / "root"
    run_step(
        [
            str(src / "configure"),
            f"--prefix={root}/usr",
            f"--sysconfdir={root}/etc",
            f"--localstatedir={root}/var",
            f"--with-os-dir={root}/os",
            f"PYTHON={sys.executable}",
        ],
        build,
    )
    run_step(["make", "install"], build)
    installed = files_under(root / "etc") | files_under(root / "os")

    work = tmp_path / "work"
    result = run_step(["make", "try"], build, {"WORK": str(work), "SIZE": "512M"})
    assert "fstab" in result.stdout, result.stdout
    assert files_under(root / "etc") | files_under(root / "os") == installed

    run_step(["make", "uninstall"], build)
    left = [str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()]
    assert not left, f"make uninstall left {left}"
    ours = [p for p in root.rglob("*") if "gentoobootstrap" in p.name]
    assert not ours, f"make uninstall left directories: {ours}"
    assert not os.path.exists(root / "os"), "an OS search directory left in Ganeti's path"
