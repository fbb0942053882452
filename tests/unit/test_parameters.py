"""OS parameters (``-O name=value``): validated, listed, and never echoed."""

from __future__ import annotations

import pytest

from gentoobootstrap.config import parameters
from gentoobootstrap.errors import ParameterError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@x"


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(ParameterError) as e:
        parameters.parse(environ)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("fs", ["ext2", "ext3", "ext4", "xfs", "btrfs"])
def test_every_supported_filesystem(fs: str) -> None:
    assert parameters.parse({"OSP_FILESYSTEM": fs}) == {"filesystem": fs}


def test_bad_filesystem_names_parameter_and_allowed_values_but_not_the_value() -> None:
    message = refusal({"OSP_FILESYSTEM": "ntfs"})
    assert message == (
        "OS parameter 'filesystem' has a bad value; allowed values: ext2, ext3, ext4, xfs, btrfs"
    )
    assert "ntfs" not in message


def test_unknown_parameter_names_the_known_ones() -> None:
    message = refusal({"OSP_FOO": "bar"})
    assert message.startswith("unknown OS parameter 'foo' (known: filesystem, ")
    assert "bar" not in message


@pytest.mark.parametrize(
    ("variable", "secret"),
    [
        ("OSP_ROOT_PASSWORD", "hunter2"),
        ("OSP_SSH_KEY", "ssh-rsa not-base64!! hunter2"),
        ("OSP_TIMEZONE", "../../etc/hunter2"),
        ("OSP_NETWORK", "hunter2"),
    ],
)
def test_values_are_never_echoed(variable: str, secret: str) -> None:
    message = refusal({variable: secret})
    assert "hunter2" not in message
    assert "allowed values" in message


def test_valid_values() -> None:
    params = parameters.parse(
        {
            "OSP_SSH_KEY": KEY,
            "OSP_ROOT_PASSWORD": "locked",
            "OSP_TIMEZONE": "Europe/Berlin",
            "OSP_NETWORK": "dhcp",
            "INSTANCE_NAME": "not a parameter",
        }
    )
    assert params == {
        "ssh_key": KEY,
        "root_password": "locked",
        "timezone": "Europe/Berlin",
        "network": "dhcp",
    }


def test_parameters_list_is_exactly_name_and_description() -> None:
    text = parameters.list_text()
    assert text.endswith("\n") and "\n\n" not in text
    lines = text.splitlines()
    names = [line.split(None, 1)[0] for line in lines]
    assert names == list(parameters.PARAMETERS)
    for line in lines:
        name, description = line.split(None, 1)
        assert name.islower() and description.strip() == description and description


def test_variable_names_follow_ganeti() -> None:
    # Ganeti: OSP_ + name upper-cased with '-' turned into '_'.
    assert parameters.PARAMETERS["root_password"].variable == "OSP_ROOT_PASSWORD"
    assert parameters.Parameter("a-b", "", parameters.PARAMETERS["network"].kind).variable == (
        "OSP_A_B"
    )


# -- ssh_key: exactly one public key line --------------------------------------------------------

RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAEGZha2UtcnNhLW1vZHVsdXM="
ECDSA = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY="
BAD_KEYS = [
    # a second key, with options, on a second line (or after a CR)
    KEY + '\ncommand="/bin/sh -c hunter2" ' + KEY,
    KEY + "\r\n" + KEY,
    KEY + "\rhunter2",
    KEY + "\0hunter2",
    KEY + "\n",
    # options before the key
    'command="hunter2" ' + KEY,
    'no-pty,from="hunter2" ' + KEY,
    # not a known type, not base64, or a blob of another type
    "ssh-hunter2 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    "ssh-ed25519 hunter2!!",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJ",
    "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl hunter2",
    "ssh-ed25519",
    "hunter2",
]


@pytest.mark.parametrize(
    "key", [KEY, RSA, ECDSA, KEY.rsplit(" ", 1)[0], f"  {KEY}\t", f"{KEY} a b c"]
)
def test_one_public_key_line(key: str) -> None:
    assert parameters.parse({"OSP_SSH_KEY": key}) == {"ssh_key": key.strip()}


@pytest.mark.parametrize("key", BAD_KEYS)
def test_anything_but_one_public_key_line_is_refused_without_echo(key: str) -> None:
    message = refusal({"OSP_SSH_KEY": key})
    assert message.startswith("OS parameter 'ssh_key' has a bad value; allowed values: one OpenSSH")
    assert "hunter2" not in message and "AAAA" not in message


def test_verify_refuses_a_second_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gentoobootstrap import cli

    environ = {
        "OS_API_VERSION": "20",
        "OS_NAME": "gentoobootstrap",
        "OS_VARIANT": "default",
        "DEBUG_LEVEL": "0",
        "OSP_SSH_KEY": BAD_KEYS[0],
    }
    assert cli.main("verify", ["parameters"], environ) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "ERROR: verify: OS parameter 'ssh_key' has a bad value; allowed values: one OpenSSH "
        "public key line, TYPE BASE64 [COMMENT], TYPE one of "
        + ", ".join(parameters.SSH_KEY_TYPES)
        + "; no options, no second line"
    )
    assert "hunter2" not in lines[0]
