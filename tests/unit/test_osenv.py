"""The Ganeti OS-interface environment: what each operation needs, as one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gentoobootstrap import osenv
from gentoobootstrap.errors import OSEnvError, ParameterError
from support import ganeti_environ

DISK = Path("/dev/xvda")


def env_for(operation: str, **extra: str) -> dict[str, str]:
    env = ganeti_environ(DISK)
    if operation == "export":
        env.update(EXPORT_DEVICE="/dev/snap0", EXPORT_INDEX="0", EXP_SIZE_FD="11")
    elif operation == "import":
        env.update(IMPORT_DEVICE="/dev/xvda", IMPORT_INDEX="0")
    elif operation == "rename":
        env.update(OLD_INSTANCE_NAME="old.example.com")
    env.update(extra)
    return env


def failure(operation: str, env: dict[str, str]) -> str:
    with pytest.raises(OSEnvError) as e:
        osenv.parse(operation, env)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_create_environment_as_ganeti_passes_it() -> None:
    env = osenv.parse("create", env_for("create", INSTANCE_REINSTALL="1", OSP_FILESYSTEM="xfs"))
    assert env.api_version == 20
    assert (env.os_name, env.variant, env.instance_name) == (
        "gentoobootstrap",
        "default",
        "inst1.example.com",
    )
    assert env.disks[0].path == DISK
    assert env.disks[0].backend_type == "block"
    assert env.nics[0].mac == "aa:00:00:12:34:56"
    assert env.nics[0].link == "br0"
    assert env.maxmem_mib == 512
    assert env.hv_flag("serial_console")
    assert env.reinstall
    assert env.params == {"filesystem": "xfs"}


def test_empty_variant_means_default() -> None:
    assert osenv.parse("create", env_for("create", OS_VARIANT="")).variant == "default"


@pytest.mark.parametrize("operation", ["create", "import", "export", "rename"])
def test_instance_name_is_required(operation: str) -> None:
    env = env_for(operation)
    del env["INSTANCE_NAME"]
    assert failure(operation, env) == "INSTANCE_NAME: required but not set"


@pytest.mark.parametrize("name", ["bad_name!", "-leading.example.com", "a..b", "x" * 254])
def test_malformed_instance_name(name: str) -> None:
    assert "INSTANCE_NAME: not a valid host name" in failure(
        "create", env_for("create", INSTANCE_NAME=name)
    )


@pytest.mark.parametrize("operation", ["create", "import", "export", "rename"])
def test_disk_count_is_required(operation: str) -> None:
    env = env_for(operation)
    del env["DISK_COUNT"]
    assert failure(operation, env) == "DISK_COUNT: required but not set"


def test_malformed_disk_count() -> None:
    assert failure("create", env_for("create", DISK_COUNT="one")) == (
        "DISK_COUNT: must be a whole number, not 'one'"
    )


def test_create_needs_a_disk() -> None:
    assert "DISK_COUNT: the instance has no disk" in failure(
        "create", env_for("create", DISK_COUNT="0")
    )


def test_create_needs_disk_0_path() -> None:
    env = env_for("create")
    del env["DISK_0_PATH"]
    assert failure("create", env) == "DISK_0_PATH: required but not set"


def test_other_operations_do_not_need_disk_0_path() -> None:
    env = env_for("rename")
    del env["DISK_0_PATH"]
    assert osenv.parse("rename", env).disks[0].path is None


def test_malformed_disk_size() -> None:
    assert "DISK_0_SIZE: must be a whole number" in failure(
        "create", env_for("create", DISK_0_SIZE="2G")
    )


@pytest.mark.parametrize("operation", ["export", "import"])
def test_export_import_device_and_index(operation: str) -> None:
    prefix = operation.upper()
    env = osenv.parse(operation, env_for(operation))
    assert env.device is not None and env.disk_index == 0
    for missing in (f"{prefix}_DEVICE", f"{prefix}_INDEX"):
        broken = env_for(operation)
        del broken[missing]
        assert failure(operation, broken) == f"{missing}: required but not set"
    assert failure(operation, env_for(operation, **{f"{prefix}_INDEX": "first"})) == (
        f"{prefix}_INDEX: must be a whole number, not 'first'"
    )


def test_export_size_fd() -> None:
    assert osenv.parse("export", env_for("export")).exp_size_fd == 11
    assert "EXP_SIZE_FD" in failure("export", env_for("export", EXP_SIZE_FD="x"))


def test_rename_needs_the_old_name() -> None:
    assert osenv.parse("rename", env_for("rename")).old_instance_name == "old.example.com"
    env = env_for("rename")
    del env["OLD_INSTANCE_NAME"]
    assert failure("rename", env) == "OLD_INSTANCE_NAME: required but not set"
    bad = env_for("rename", OLD_INSTANCE_NAME="no spaces please")
    assert "OLD_INSTANCE_NAME: not a valid host name" in failure("rename", bad)


def test_verify_gets_only_the_core_variables() -> None:
    env = osenv.parse(
        "verify",
        {
            "OS_API_VERSION": "20",
            "OS_NAME": "gentoobootstrap",
            "OS_VARIANT": "default",
            "DEBUG_LEVEL": "0",
            "OSP_FILESYSTEM": "btrfs",
            "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
        },
    )
    assert env.params == {"filesystem": "btrfs"}
    assert env.instance_name == "" and env.disks == ()


@pytest.mark.parametrize("version", ["5", "25"])
def test_unsupported_api_version(version: str) -> None:
    message = failure("create", env_for("create", OS_API_VERSION=version))
    assert message == f"OS_API_VERSION: {version} is not supported (supported: 10, 15, 20)"


def test_malformed_debug_level() -> None:
    assert "DEBUG_LEVEL: must be a whole number" in failure("verify", {"DEBUG_LEVEL": "high"})


def test_bad_os_parameter_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError):
        osenv.parse("create", env_for("create", OSP_FILESYSTEM="ntfs"))


def test_parameter_values_stay_out_of_reprs() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me"
    env = osenv.parse(
        "create", env_for("create", OSP_SSH_KEY=key, OSP_ROOT_PASSWORD="$6$salt$hash")
    )
    assert env.params["ssh_key"] == key
    text = repr(env)
    assert "AAAAC3" not in text and "$6$salt$hash" not in text
    assert "'ssh_key': ***" in text


def test_nics_with_a_ganeti_network() -> None:
    env = osenv.parse(
        "create",
        env_for(
            "create",
            NIC_COUNT="2",
            NIC_1_MAC="aa:00:00:00:00:02",
            NIC_1_IP="192.0.2.10",
            NIC_1_NETWORK_NAME="lan",
            NIC_1_NETWORK_SUBNET="192.0.2.0/24",
            NIC_1_NETWORK_GATEWAY="192.0.2.1",
            NIC_1_NETWORK_SUBNET6="2001:db8::/64",
        ),
    )
    assert len(env.nics) == 2
    nic = env.nics[1]
    assert (nic.ip, nic.network_name, nic.subnet, nic.gateway, nic.subnet6) == (
        "192.0.2.10",
        "lan",
        "192.0.2.0/24",
        "192.0.2.1",
        "2001:db8::/64",
    )


def test_missing_nic_count_means_no_nics() -> None:
    env = env_for("create")
    del env["NIC_COUNT"]
    assert osenv.parse("create", env).nics == ()


def test_unknown_operation_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        osenv.parse("destroy", env_for("create"))
