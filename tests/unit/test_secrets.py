"""OS parameter values are never logged nor echoed; one key line only reaches authorized_keys."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gentoobootstrap.config import files, osenv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import ParameterError
from gentoobootstrap.guest import configure
from gentoobootstrap.scripts import create
from support import ganeti_environ, mounted_context
from support.guesttree import TREES
from support.logs import plain_logging  # noqa: F401 (autouse)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl hunter2"
HASH = "$6$hunter2salt$0Bx8RjvKr9ZMa0aTEmeC0G5xcFr6r0j9KcZRm7DQ1k1Z0yTj9QxvK5HLNUoZHj"


@pytest.mark.parametrize("init", ["openrc", "systemd"])
def test_configuring_a_guest_logs_no_parameter_value(
    tmp_path: Path, init: str, caplog: pytest.LogCaptureFixture
) -> None:
    disk = tmp_path / "disk.img"
    disk.touch()
    environ = ganeti_environ(
        disk,
        OSP_SSH_KEY=KEY,
        OSP_ROOT_PASSWORD=HASH,
        OSP_TIMEZONE="Europe/Berlin",
        OSP_NETWORK="dhcp",
    )
    env = osenv.parse("create", environ)
    settings = files.apply_parameters(Settings(), env.params)
    ctx = mounted_context(env, settings, TREES[init](tmp_path / "root"))
    caplog.set_level(logging.DEBUG)

    create.configure_guest(ctx)

    assert (ctx.target / "etc/timezone").read_text() == "Europe/Berlin\n"
    for secret in ("hunter2", "AAAAC3", "Berlin"):
        assert secret not in caplog.text
    assert "root password: a crypt hash; SSH keys: 1, sshd enabled" in caplog.text


@pytest.mark.parametrize(
    "parameter",
    [KEY + '\ncommand="/bin/sh" ' + KEY, KEY + "\r\n" + KEY, 'command="/bin/sh" ' + KEY],
)
def test_authorized_keys_takes_one_key_line_from_the_parameter(parameter: str) -> None:
    with pytest.raises(ParameterError) as e:
        configure.authorized_keys(None, parameter)
    assert str(e.value).startswith("OS parameter 'ssh_key' has a bad value; allowed values:")
    assert "hunter2" not in str(e.value) and "AAAA" not in str(e.value)
    assert configure.authorized_keys(None, f" {KEY} ") == [KEY]
