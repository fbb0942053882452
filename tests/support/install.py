"""Install the OS definition into a temporary prefix, as an admin would, for black-box tests.

``installed_os`` (a session fixture, enabled in tests/conftest.py) runs
``configure --prefix=P --sysconfdir=P/etc --localstatedir=P/var --with-os-dir=P/os
PYTHON=/usr/bin/python3 && make install`` in a build directory outside the work
tree and returns an :class:`InstalledOS`.  Its :meth:`InstalledOS.run` runs an
installed script exactly as Ganeti does: cleared environment, cwd = the OS
directory, ``PATH=/sbin:/bin:/usr/sbin:/usr/bin``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import REPO

#: The interpreter nodes run the scripts with (Debian's python3 with python3-configobj).
PYTHON = "/usr/bin/python3"
GANETI_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"
OS_NAME = "gentoobootstrap"


class BuildError(Exception):
    pass


def run_step(
    argv: Sequence[str | Path], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a build step (output and errors in ``stdout``); BuildError shows a failure's tail."""
    result = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-60:])
        raise BuildError(
            f"{' '.join(map(str, argv))} in {cwd} failed ({result.returncode}):\n{tail}"
        )
    return result


def copy_checkout(repo: Path, dest: Path, version: str | None = None) -> Path:
    """Copy ``repo``'s files as ``git status`` sees them (new files included, ignored and
    deleted ones not) to ``dest``.  The copy has no .git: ``version`` goes to
    ``.tarball-version``, where configure looks for it."""
    listing = run_step(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], repo
    )
    for name in filter(None, listing.stdout.split("\0")):
        origin = repo / name
        if not origin.exists() and not origin.is_symlink():
            continue  # deleted in the work tree
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, dest / name, follow_symlinks=False)
    if version is not None:
        (dest / ".tarball-version").write_text(version + "\n")
    return dest


def source_tree(workdir: Path, repo: Path = REPO) -> Path:
    """A pristine, autoreconf'd copy of the work tree (what ``git status`` shows, uncommitted
    work included, build products excluded), so in-tree builds of the checkout do not matter.
    A dist tarball (no .git, configure shipped, not configured in place) is used as it is."""
    if not (repo / ".git").exists():
        if (repo / "config.status").exists():
            raise BuildError(f"{repo} is configured in place: run 'make distclean' there first")
        return repo
    version = run_step([repo / "build-aux" / "git-version"], repo).stdout.strip()
    src = copy_checkout(repo, workdir / "src", version)
    run_step(["autoreconf", "--force", "--install"], src)
    return src


@dataclass(frozen=True)
class InstalledOS:
    """Where ``make install`` put everything, and how to run it the way Ganeti does."""

    prefix: Path
    builddir: Path
    os_dir: Path  # P/os/gentoobootstrap
    defaults_file: Path
    variants_dir: Path
    variants_list: Path
    hooks_dir: Path
    cache_dir: Path
    sbindir: Path
    pylibdir: Path
    docdir: Path
    python: str = PYTHON

    def script(self, name: str) -> Path:
        return self.os_dir / name

    def variants(self) -> list[str]:
        lines = self.variants_list.read_text().splitlines()
        return [v.strip() for v in lines if v.strip() and not v.startswith("#")]

    def add_variant(self, name: str, settings: Mapping[str, str]) -> Path:
        """Write ``variants/NAME.conf`` (``KEY="value"`` lines) and list NAME in variants.list."""
        conf = self.variants_dir / f"{name}.conf"
        conf.write_text("".join(f'{key}="{value}"\n' for key, value in settings.items()))
        if name not in self.variants():
            with self.variants_list.open("a") as f:
                f.write(f"{name}\n")
        return conf

    def run(
        self, script: str, environ: Mapping[str, str], *args: str, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run an installed OS script as Ganeti's node daemon does: only ``environ`` (plus
        Ganeti's PATH), cwd = the OS directory, stdin closed.  Output is captured as text
        unless ``stdout``/``text`` say otherwise."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        if "stdout" not in kwargs and "capture_output" not in kwargs:
            kwargs["capture_output"] = True
        kwargs.setdefault("text", True)
        env = {"PATH": GANETI_PATH, **environ}
        return subprocess.run(
            [str(self.script(script)), *args], env=env, cwd=self.os_dir, check=False, **kwargs
        )

    def start(
        self, script: str, environ: Mapping[str, str], **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start an installed OS script as ``run`` does, without waiting for it."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        env = {"PATH": GANETI_PATH, **environ}
        return subprocess.Popen([str(self.script(script))], env=env, cwd=self.os_dir, **kwargs)


def install(workdir: Path, source: Path | None = None, python: str = PYTHON) -> InstalledOS:
    """configure + make install from ``source`` (default: a fresh copy of the work tree)
    into ``workdir/prefix``, building in ``workdir/build``."""
    source = source or source_tree(workdir)
    prefix = workdir / "prefix"
    build = workdir / "build"
    build.mkdir(parents=True)
    run_step(
        [
            source / "configure",
            f"--prefix={prefix}",
            f"--sysconfdir={prefix}/etc",
            f"--localstatedir={prefix}/var",
            f"--with-os-dir={prefix}/os",
            f"PYTHON={python}",
        ],
        build,
    )
    run_step(["make", f"-j{os.cpu_count() or 1}", "install"], build)
    conf = prefix / "etc" / "ganeti"
    os_dir = prefix / "os" / OS_NAME
    return InstalledOS(
        prefix=prefix,
        builddir=build,
        os_dir=os_dir,
        defaults_file=conf / "ganeti-instance-gentoobootstrap",
        variants_dir=conf / "instance-gentoobootstrap" / "variants",
        variants_list=os_dir / "variants.list",
        hooks_dir=conf / "instance-gentoobootstrap" / "hooks",
        cache_dir=prefix / "var" / "cache" / "ganeti-instance-gentoobootstrap",
        sbindir=prefix / "sbin",
        pylibdir=prefix / "share" / "ganeti-instance-gentoobootstrap" / "python",
        docdir=prefix / "share" / "doc" / "ganeti-instance-gentoobootstrap",
        python=python,
    )


#: What building the OS definition needs on the test machine.
BUILD_TOOLS = ("autoreconf", "automake", "make", "git")


@pytest.fixture(scope="session")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The work tree, copied and autoreconf'd once per session."""
    missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to build the OS definition (autoconf, automake)")
    return source_tree(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="session")
def installed_os(tmp_path_factory: pytest.TempPathFactory, source_copy: Path) -> InstalledOS:
    """The OS definition installed once per session into a temporary prefix.

    Shared by every test of the session: tests may add variants (with distinct names)
    but should not change what others rely on."""
    return install(tmp_path_factory.mktemp("installed-os"), source_copy)
