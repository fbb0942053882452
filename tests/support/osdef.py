"""Drive the OS scripts in-process (or in a small subprocess) against a temporary configuration.

Until the installed-OS fixture exists, tests point :mod:`gentoobootstrap.paths`
at a temporary config dir and call ``cli.main`` with a Ganeti environment.
Temporary mount points go below the test's own directory so the leak check
sees them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import sh

from gentoobootstrap import cli, paths
from gentoobootstrap.disk import devices


def configure(confdir: Path, **settings: object) -> Path:
    """Write ``confdir/variants/default.conf`` with ``settings`` (KEY=value) and safe dirs."""
    (confdir / "variants").mkdir(parents=True, exist_ok=True)
    (confdir / "tmp").mkdir(exist_ok=True)
    values = {
        "CACHE_DIR": str(confdir / "cache"),
        "CUSTOMIZE_DIR": str(confdir / "hooks"),
        **{k.upper(): str(v) for k, v in settings.items()},
    }
    text = "".join(f'{k}="{v}"\n' for k, v in values.items())
    (confdir / "variants" / "default.conf").write_text(text)
    return confdir


def point_paths_at(confdir: Path, patch: pytest.MonkeyPatch | None = None) -> None:
    """Make the library read ``confdir`` and put temporary directories below it."""
    values = {
        "DEFAULTS_FILE": confdir / "defaults",
        "VARIANTS_DIR": confdir / "variants",
        "OS_PATH": confdir / "os",
    }
    for name, value in values.items():
        if patch:
            patch.setattr(paths, name, value)
        else:
            setattr(paths, name, value)
    if patch:
        patch.setattr(tempfile, "tempdir", str(confdir / "tmp"))
    else:
        tempfile.tempdir = str(confdir / "tmp")


def create(environ: Mapping[str, str]) -> int:
    return cli.main("create", [], dict(environ), isolate=False)


# --- looking at a disk image without the library -------------------------------------------


def table(image: Path) -> dict[str, object]:
    """``sfdisk --json`` of the image ({} without a partition table)."""
    try:
        return dict(json.loads(str(sh.sfdisk("--json", str(image))))["partitiontable"])
    except sh.ErrorReturnCode:
        return {}


def probe(image: Path, offset: int = 0, size: int | None = None) -> dict[str, str]:
    """blkid's view (TYPE, UUID, LABEL, ...) of the filesystem at ``offset`` in the image."""
    args = ["--probe", "--output", "export", "--offset", str(offset)]
    if size is not None:
        args += ["--size", str(size)]
    try:
        out = str(sh.blkid(*args, str(image)))
    except sh.ErrorReturnCode:
        return {}
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@contextlib.contextmanager
def mounted(
    image: Path, where: Path, offset: int = 0, size: int | None = None, fstype: str = ""
) -> Iterator[Path]:
    """Mount the filesystem at ``offset`` of ``image`` read-only."""
    options = f"ro,offset={offset}" + (f",sizelimit={size}" if size else "")
    if fstype == "xfs":
        options += ",norecovery"
    with loop_mounted(image, where, options):
        yield where


@contextlib.contextmanager
def loop_mounted(image: Path, where: Path, options: str) -> Iterator[Path]:
    """Mount ``image`` on ``where`` (made if missing) through mount's own autoclear loop
    device with ``options``; on leaving, unmount and wait until the loop device is free."""
    where.mkdir(parents=True, exist_ok=True)
    sh.mount("-o", f"loop,{options}", str(image), str(where))
    loop = Path(
        str(sh.findmnt("--noheadings", "--output", "SOURCE", "--mountpoint", str(where))).strip()
    )
    try:
        yield where
    finally:
        sh.umount(str(where))
        # mount's loop device is cleared on its last close, which may come a moment later.
        devices.wait_for(
            lambda: loop not in devices.loops_of(image),
            f"{loop} of {image} to go",
            devices.RELEASE_TIMEOUT,
        )


def partitions(image: Path) -> list[dict[str, int]]:
    """start/size in bytes of each partition, in table order, with its number."""
    found = table(image)
    unit = int(found.get("sectorsize", 512))  # type: ignore[arg-type]
    result = []
    for entry in found.get("partitions", []):  # type: ignore[attr-defined]
        number = int("".join(c for c in entry["node"][len(str(image)) :] if c.isdigit()))
        result.append(
            {
                "number": number,
                "start": entry["start"] * unit,
                "size": entry["size"] * unit,
                "type": entry["type"],
            }
        )
    return result


if __name__ == "__main__":
    # python -m support.osdef CONFDIR: run create with os.environ, as the OS script would.
    point_paths_at(Path(sys.argv[1]))
    sys.exit(create(os.environ))
