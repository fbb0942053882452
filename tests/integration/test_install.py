"""make install gives an OS definition Ganeti accepts; uninstall and DESTDIR behave.

No root needed: everything goes into a temporary prefix.  Ganeti's own checks run
when Debian's ``ganeti`` package is installed (CI installs it).
"""

from __future__ import annotations

import filecmp
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from support import REPO
from support.install import GANETI_PATH, InstalledOS, install

OS_SCRIPTS = ("create", "import", "export", "rename", "verify")


def ganeti_python_dir() -> Path | None:
    """Where Debian's ganeti package keeps its ``ganeti`` Python package (newest version)."""
    candidates = sorted(Path("/usr/share/ganeti").glob("*/ganeti/backend.py"))
    candidates += [Path("/usr/lib/python3/dist-packages/ganeti/backend.py")]
    found = [c.parent.parent for c in candidates if c.is_file()]
    return found[-1] if found and Path("/usr/bin/python3").exists() else None


def run_ganeti(code: str, installed: InstalledOS) -> dict[str, object]:
    """Run ``code`` with Ganeti's own modules, the OS search path set to our prefix."""
    ganeti = ganeti_python_dir()
    if ganeti is None:
        pytest.skip("Debian's ganeti package is not installed (apt-get install ganeti)")
    prelude = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ganeti)!r})\n"
        "from ganeti import backend, pathutils\n"
        f"pathutils.OS_SEARCH_PATH = [{str(installed.os_dir.parent)!r}]\n"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-c", prelude + code],
        capture_output=True,
        text=True,
        env={"PATH": GANETI_PATH},
        check=True,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file below ``root``: relative path -> (mode, content)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[str(path.relative_to(root))] = (path.stat().st_mode, path.read_bytes())
    return files


def test_ganeti_accepts_the_os(installed_os: InstalledOS) -> None:
    found = run_ganeti(
        "(name, path, status, diagnose, variants, params, api, trusted), = "
        "[r for r in backend.DiagnoseOS() if r[0] == 'gentoobootstrap']\n"
        "print(json.dumps(dict(status=status, diagnose=diagnose, variants=variants,"
        " params=params, api=api, trusted=trusted)))\n",
        installed_os,
    )
    assert found["diagnose"] == "" and found["status"] is True
    assert found["api"] == [20, 15, 10]
    assert "default" in found["variants"]  # type: ignore[operator]
    params = [tuple(p) for p in found["params"]]  # type: ignore[attr-defined]
    assert [name for name, _ in params] == [
        "filesystem",
        "network",
        "ssh_key",
        "root_password",
        "timezone",
    ]
    assert all(description for _, description in params)
    assert found["trusted"] is True  # no create_untrusted


VALIDATE = (
    "try:\n"
    "    ok = backend.ValidateOS(True, 'gentoobootstrap+default', ['parameters'], {}, False)\n"
    "    print(json.dumps(dict(ok=ok)))\n"
    "except backend.RPCFail as e:\n"
    "    print(json.dumps(dict(ok=False, error=str(e))))\n"
)


def test_ganeti_validates_parameters_with_our_verify(installed_os: InstalledOS) -> None:
    ok = run_ganeti(VALIDATE.replace("{}", "{'filesystem': 'xfs'}"), installed_os)
    assert ok == {"ok": True}
    bad = run_ganeti(VALIDATE.replace("{}", "{'filesystem': 'ntfs'}"), installed_os)
    assert bad["ok"] is False
    assert "OS parameter 'filesystem' has a bad value; allowed values: " in str(bad["error"])
    assert "ntfs" not in str(bad["error"])


def test_os_directory_layout(installed_os: InstalledOS) -> None:
    os_dir = installed_os.os_dir
    assert sorted(p.name for p in os_dir.iterdir()) == sorted(
        [*OS_SCRIPTS, "ganeti_api_version", "parameters.list", "variants.list"]
    )
    for name in OS_SCRIPTS:
        mode = (os_dir / name).stat().st_mode
        assert mode & stat.S_IXUSR, f"{name} is not executable"
        first = (os_dir / name).read_text().splitlines()[0]
        assert first == f"#!{installed_os.python}"
        assert f'sys.exit(cli.main("{name}", sys.argv[1:]))' in (os_dir / name).read_text()
    assert (os_dir / "ganeti_api_version").read_text() == "20\n15\n10\n"
    for line in (os_dir / "parameters.list").read_text().splitlines():
        assert len(line.split(None, 1)) == 2
    assert "default" in installed_os.variants()
    for name in ("gentoobootstrap-try", "gentoobootstrap-fetch"):
        assert os.access(installed_os.sbindir / name, os.X_OK)


def test_every_library_module_is_installed(installed_os: InstalledOS) -> None:
    # Makefile.am installs each package's *.py by wildcard; a new package needs an edit
    # there, and this test says so.
    def modules(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*.py")}

    source = modules(REPO / "python" / "gentoobootstrap") - {"_autoconf.py"}
    installed = modules(installed_os.pylibdir / "gentoobootstrap")
    assert installed == source | {"_autoconf.py"}


def test_configured_paths_and_generated_files(installed_os: InstalledOS) -> None:
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(installed_os.pylibdir)!r})\n"
        "from gentoobootstrap import paths\n"
        "from gentoobootstrap.config import parameters, settings\n"
        "print(json.dumps(dict(os_path=str(paths.OS_PATH), defaults=str(paths.DEFAULTS_FILE),"
        " hooks=str(paths.HOOKS_DIR), cache=str(paths.CACHE_DIR),"
        " defaults_text=settings.defaults_file_text(),"
        " parameters=parameters.list_text())))\n"
    )
    out = subprocess.run(
        [installed_os.python, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(out)
    assert found["os_path"] == str(installed_os.os_dir)
    assert found["defaults"] == str(installed_os.defaults_file)
    assert found["hooks"] == str(installed_os.hooks_dir)
    assert found["cache"] == str(installed_os.cache_dir)
    assert installed_os.defaults_file.read_text() == found["defaults_text"]
    assert f'#CUSTOMIZE_DIR="{installed_os.hooks_dir}"' in found["defaults_text"]
    assert (installed_os.os_dir / "parameters.list").read_text() == found["parameters"]
    assert (installed_os.variants_dir / "default.conf").is_file()
    assert installed_os.hooks_dir.is_dir()


def test_example_hooks_are_installed_not_executable(installed_os: InstalledOS) -> None:
    examples = sorted(p.name for p in (REPO / "examples" / "hooks").glob("*") if p.is_file())
    installed = sorted(p.name for p in installed_os.hooks_dir.iterdir())
    assert installed == examples
    for hook in installed_os.hooks_dir.iterdir():
        assert not hook.stat().st_mode & 0o111, f"{hook.name} must not be executable"
        assert (installed_os.docdir / "examples" / "hooks" / hook.name).is_file()


def verify(installed_os: InstalledOS, variant: str = "default", **osp: str) -> tuple[int, str]:
    environ = {
        "OS_API_VERSION": "20",
        "OS_NAME": "gentoobootstrap",
        "OS_VARIANT": variant,
        "DEBUG_LEVEL": "0",
        **{f"OSP_{k}": v for k, v in osp.items()},
    }
    result = installed_os.run("verify", environ, "parameters")
    assert result.stdout == ""
    return result.returncode, result.stderr.strip().splitlines()[-1] if result.stderr else ""


def test_installed_verify_as_ganeti_runs_it(installed_os: InstalledOS) -> None:
    assert verify(installed_os, FILESYSTEM="xfs") == (0, "")
    code, last = verify(installed_os, FILESYSTEM="ntfs")
    assert code == 1 and "ERROR: verify: OS parameter 'filesystem' has a bad value" in last
    assert "ext2, ext3, ext4, xfs, btrfs" in last and "ntfs" not in last
    code, last = verify(installed_os, FOO="bar")
    assert code == 1 and "unknown OS parameter 'foo'" in last


def test_installed_configuration_errors(installed_os: InstalledOS) -> None:
    conf = installed_os.add_variant("typo", {"FILESYTEM": "xfs"})
    code, last = verify(installed_os, "typo")
    assert code == 1
    assert last.endswith(f"{conf}:1: FILESYTEM: unknown setting (did you mean FILESYSTEM?)")
    code, last = verify(installed_os, "unlisted")
    assert code == 1 and "variant 'unlisted' is not listed" in last
    with installed_os.variants_list.open("a") as f:
        f.write("ghost\n")
    code, last = verify(installed_os, "ghost")
    assert code == 1 and "has no settings file" in last
    code, last = verify(installed_os, "../default")
    assert code == 1 and "bad variant name" in last


def test_unimplemented_operations_fail_rather_than_pretend(installed_os: InstalledOS) -> None:
    # Missing instance variables are one ERROR line and exit 1 for every operation.
    for name in ("create", "import", "export", "rename"):
        result = installed_os.run(name, {"OS_VARIANT": "default"})
        assert result.returncode == 1, name
        assert result.stdout == ""
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .endswith(f"ERROR: {name}: INSTANCE_NAME: required but not set")
        )


def test_destdir_install_uninstall_and_admin_files(tmp_path: Path, source_copy: Path) -> None:
    installed = install(tmp_path / "plain", source_copy)
    build, prefix = installed.builddir, installed.prefix

    # DESTDIR gives the same files as a plain install.
    destdir = tmp_path / "destdir"
    subprocess.run(
        ["make", "-s", "install", f"DESTDIR={destdir}"], cwd=build, check=True, capture_output=True
    )
    assert tree(destdir / prefix.relative_to("/")) == tree(prefix)

    # A second install keeps what the admin changed.
    installed.defaults_file.write_text('FILESYSTEM="xfs"\n')
    installed.add_variant("mine", {"SWAP": "yes"})
    subprocess.run(["make", "-s", "install"], cwd=build, check=True, capture_output=True)
    assert installed.defaults_file.read_text() == 'FILESYSTEM="xfs"\n'
    assert installed.variants() == ["default", "mine"]

    # Uninstall removes everything else; unchanged config goes too.
    subprocess.run(["make", "-s", "uninstall"], cwd=build, check=True, capture_output=True)
    left = sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if p.is_file())
    assert left == [
        "etc/ganeti/ganeti-instance-gentoobootstrap",
        "etc/ganeti/instance-gentoobootstrap/variants/mine.conf",
        "os/gentoobootstrap/variants.list",
    ]
    subprocess.run(
        ["make", "-s", "uninstall", f"DESTDIR={destdir}"],
        cwd=build,
        check=True,
        capture_output=True,
    )
    assert [p for p in destdir.rglob("*") if not p.is_dir()] == []


def test_configure_refuses_a_python_without_configobj(tmp_path: Path, source_copy: Path) -> None:
    bare = tmp_path / "bare"  # a venv without the system's site-packages: no configobj
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", bare], check=True)
    result = subprocess.run(
        [source_copy / "configure", f"--prefix={tmp_path}/p", f"PYTHON={bare}/bin/python3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "python3-configobj (Debian) or dev-python/configobj (Gentoo)" in result.stderr


def test_configure_resolves_a_shim_to_the_interpreter(tmp_path: Path, source_copy: Path) -> None:
    # A wrapper on PATH (as pyenv's shims are) must not end up in the scripts' #! line.
    shim = tmp_path / "shims" / "python3"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\nexec /usr/bin/python3 "$@"\n')
    shim.chmod(0o755)
    result = subprocess.run(
        [source_copy / "configure", f"--prefix={tmp_path}/p", "PYTHON=python3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{shim.parent}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "Python:         /usr/bin/python3\n" in result.stdout


def test_dist_tarball_version_matches(source_copy: Path) -> None:
    version = (source_copy / ".tarball-version").read_text().strip()
    configure = (source_copy / "configure").read_text()
    assert f"PACKAGE_VERSION='{version}'" in configure
    assert filecmp.cmp(source_copy / "Makefile.am", REPO / "Makefile.am", shallow=False)
