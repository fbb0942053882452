"""The example hooks (examples/hooks/), run as CUSTOMIZE_DIR hooks against Gentoo-shaped trees."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gentoobootstrap.errors import HookError
from gentoobootstrap.guest import hooks
from support import REPO
from support.guesttree import HOSTS, TREES, openrc_tree
from support.logs import plain_logging  # noqa: F401 (autouse)

EXAMPLES = REPO / "examples" / "hooks"


def test_examples_ship_documented_and_not_executable() -> None:
    names = sorted(p.name for p in EXAMPLES.iterdir())
    assert names == ["defaultpasswords", "grub", "hosts", "ssh-keys", "timezone"]
    for path in EXAMPLES.iterdir():
        text = path.read_text()
        assert text.startswith(f"#!/bin/sh\n# {path.name}: ")
        assert "Enable it by making it executable in CUSTOMIZE_DIR." in text
        assert not path.stat().st_mode & 0o111, f"{path.name} must not be executable"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_examples_pass_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", "--shell=sh", *sorted(map(str, EXAMPLES.iterdir()))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def run(tmp_path: Path, name: str, target: Path, **env: str) -> None:
    """Enable example ``name`` in a hook directory and run it as create would."""
    directory = tmp_path / "hooks"
    directory.mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / name, directory / name)
    (directory / name).chmod(0o755)
    environ = {"TARGET": str(target), "CUSTOMIZE_DIR": str(directory), **env}
    hooks.run_parts(hooks.find(directory), environ, target)


def test_hosts(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    (top / "etc/hosts").write_text(HOSTS + "127.0.1.1\tweb1.example.com web1\n")
    run(tmp_path, "hosts", top, INSTANCE_NAME="web1.example.com")
    assert "127.0.1.1" in (top / "etc/hosts").read_text()  # no IP: left alone
    run(tmp_path, "hosts", top, INSTANCE_NAME="web1.example.com", NIC_0_IP="192.0.2.10")
    assert (top / "etc/hosts").read_text() == HOSTS + "192.0.2.10\tweb1.example.com web1\n"
    assert (top / "etc/hosts").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("init", ["openrc", "systemd"])
def test_ssh_keys(tmp_path: Path, init: str) -> None:
    top = TREES[init](tmp_path / "root")
    uid, gid = os.getuid(), os.getgid()
    with open(top / "etc/passwd", "a") as f:
        f.write(f"deploy:x:{uid}:{gid}::/home/deploy:/bin/bash\n")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeploy ci@example"
    (tmp_path / "ssh-keys").write_text(f"# who key\ndeploy {key}\n\ndeploy {key}\n")
    run(tmp_path, "ssh-keys", top)
    keys = top / "home/deploy/.ssh/authorized_keys"
    assert keys.read_text() == key + "\n"  # once
    assert keys.stat().st_mode & 0o777 == 0o600 and keys.stat().st_uid == uid
    assert keys.parent.stat().st_mode & 0o777 == 0o700
    if init == "openrc":
        assert os.readlink(top / "etc/runlevels/default/sshd") == "/etc/init.d/sshd"
    else:
        link = top / "etc/systemd/system/multi-user.target.wants/sshd.service"
        assert os.readlink(link) == "/usr/lib/systemd/system/sshd.service"
    (tmp_path / "ssh-keys").write_text(f"nobody {key}\n")
    with pytest.raises(HookError, match="the guest has no user nobody"):
        run(tmp_path, "ssh-keys", top)


def test_ssh_keys_without_a_file(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    run(tmp_path, "ssh-keys", top)
    assert not (top / "etc/runlevels/default/sshd").exists()


def openssl_crypt(password: str, salt: str) -> str:
    return subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_defaultpasswords(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    top = openrc_tree(tmp_path / "root")
    run(tmp_path, "defaultpasswords", top)  # no file: nothing
    assert (top / "etc/shadow").read_text().startswith("root:*:")
    (tmp_path / "defaultpasswords").write_text("# user:password\nroot:s3cr:et $x\nportage:pw2")
    caplog.set_level(logging.DEBUG)
    run(tmp_path, "defaultpasswords", top)
    entries = {e.split(":")[0]: e.split(":") for e in (top / "etc/shadow").read_text().split()}
    for user, password in (("root", "s3cr:et $x"), ("portage", "pw2")):
        hashed = entries[user][1]
        assert hashed.startswith("$6$")
        assert hashed == openssl_crypt(password, hashed.split("$")[2])
        assert entries[user][2] != "0"
    assert (top / "etc/shadow").stat().st_mode & 0o777 == 0o640
    assert "s3cr" not in caplog.text and "pw2" not in caplog.text
    assert "defaultpasswords: 2 passwords set" in caplog.text
    (tmp_path / "defaultpasswords").write_text("ghost:pw\n")
    with pytest.raises(HookError, match="the guest has no user ghost"):
        run(tmp_path, "defaultpasswords", top)


def test_timezone(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    run(tmp_path, "timezone", top, ZONE="America/New_York")
    assert os.readlink(top / "etc/localtime") == "../usr/share/zoneinfo/America/New_York"
    assert (top / "etc/timezone").read_text() == "America/New_York\n"
    with pytest.raises(HookError, match="the guest has no zoneinfo for Mars/Base"):
        run(tmp_path, "timezone", top, ZONE="Mars/Base")
