"""The Ganeti OS-interface environment: what each operation needs, as one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gentoobootstrap.config import osenv
from gentoobootstrap.errors import OSEnvError, ParameterError
from support import NIC0_NETWORK, ganeti_environ

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


@pytest.mark.parametrize(
    "name",
    [
        "bad_name!",
        "-leading.example.com",
        "trailing-.example.com",
        "a..b",
        "x" * 64 + ".example.com",  # a label is at most 63 characters
        ("x" * 63 + ".") * 4,  # 256 characters
        "web1.example.com\nERROR: forged",
        "web1;reboot",
    ],
)
def test_malformed_instance_name(name: str) -> None:
    message = failure("create", env_for("create", INSTANCE_NAME=name))
    assert message.startswith("INSTANCE_NAME: bad value '")
    assert "; allowed values: a host name or FQDN" in message


@pytest.mark.parametrize("operation", ["create", "import", "export", "rename"])
def test_disk_count_is_required(operation: str) -> None:
    env = env_for(operation)
    del env["DISK_COUNT"]
    assert failure(operation, env) == "DISK_COUNT: required but not set"


def test_malformed_disk_count() -> None:
    assert failure("create", env_for("create", DISK_COUNT="one")) == (
        "DISK_COUNT: bad value 'one'; allowed values: a whole number from 0 to 16"
    )
    assert "DISK_COUNT: bad value '17'" in failure("create", env_for("create", DISK_COUNT="17"))


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
    assert "DISK_0_SIZE: bad value '2G'; allowed values: a whole number" in failure(
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
        f"{prefix}_INDEX: bad value 'first'; allowed values: a whole number from 0 to 15"
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
    assert "OLD_INSTANCE_NAME: bad value 'no spaces please'" in failure("rename", bad)


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
    assert failure("verify", {"DEBUG_LEVEL": "high"}) == (
        "DEBUG_LEVEL: bad value 'high'; allowed values: a whole number"
    )


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
    assert (str(nic.ip), nic.network_name, str(nic.subnet), str(nic.gateway), str(nic.subnet6)) == (
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


# -- every variable checked before use ---------------------------------------------------------

GATEWAY_ATTACK = '192.0.2.1"; touch /x; "'
MAC_ATTACK = "aa:00:00:12:34:56\n[Network]\nDNS=203.0.113.66"

CHECKED = [
    # (variable, good values, bad values)
    ("NIC_0_MAC", ["aa:00:00:12:34:56", "AA:00:00:12:34:5F"],
     ["zz:zz", "aa:00:00:12:34", "aa:00:00:12:34:56:78", "aa-00-00-12-34-56", MAC_ATTACK,
      "aa:00:00:12:34:56 ", "aa:00:00:12:34:5"]),
    ("NIC_0_IP", ["192.0.2.10", "2001:db8:1::10"],
     ["192.0.2.300", "192.0.2.010", "192.0.2.10; reboot", "fe80::1%$(reboot)", "192.0.2.10/24"]),
    ("NIC_0_MODE", ["bridged", "routed", "openvswitch"], ["bridge", "routed;x"]),
    ("NIC_0_LINK", ["br0", "xen-br0", "vmbr0.100", "ovs_sw@1"],
     ["br 0", "br0;x", "a" * 16, "br/0", "..", "br0\n", 'br"0', "br$0"]),
    ("NIC_0_BRIDGE", ["br0"], ["br0`id`"]),
    ("NIC_0_VLAN", [".100", ":100:200", ".100:200:300"], ["100a", ".5000", ".100;x", ":"]),
    ("NIC_0_NAME", ["nic-0", "eth0.front"], ["my nic", "nic\n0", "nic$(id)"]),
    ("NIC_0_UUID", ["0c8b4a8e-0f55-4d2e-a2a5-5d1b0b3c7e12"], ["not a uuid"]),
    ("NIC_0_NETWORK_NAME", ["lan"], ["lan; reboot"]),
    ("NIC_0_NETWORK_SUBNET", ["192.0.2.0/24", "192.0.0.0/16"],
     ["192.0.2.0", "192.0.2.0/33", "2001:db8::/64", "192.0.2/24x"]),
    ("NIC_0_NETWORK_GATEWAY", ["192.0.2.1", "192.0.2.254"],
     [GATEWAY_ATTACK, "192.0.2.1 ", "2001:db8::1", "gateway"]),
    ("NIC_0_NETWORK_SUBNET6", ["2001:db8:1::/64", "2001:db8::/32"],
     ["2001:db8::/129", "192.0.2.0/24", "2001:db8::", "fe80::%eth0/64"]),
    ("NIC_0_NETWORK_GATEWAY6", ["2001:db8:1::1", "fe80::1"],
     ["fe80::1%eth0", "2001:db8::1\nx", "192.0.2.1"]),
    ("NIC_0_NETWORK_MAC_PREFIX", ["aa:00:00"], ["aa:00", "aa:00:00:00"]),
    ("NIC_COUNT", ["0", "8"], ["9", "-1", "two", "\uff11"]),  # a full-width digit one
    ("DISK_COUNT", ["1", "16"], ["0x1", "17"]),
    ("DISK_0_PATH", ["/dev/xvda", "/srv/ganeti/file-storage/inst1/disk0"],
     ["dev/xvda", "/dev/../etc/shadow", "/dev/xvda\nERROR: forged", "/dev/x\x7f"]),
    ("DISK_0_SIZE", ["1024"], ["1G", "-1"]),
    ("DISK_0_ACCESS", ["rw", "ro"], ["RW", "w"]),
    ("DISK_0_BACKEND_TYPE", ["block", "file:loop"], ["file", "rbd;x"]),
    ("HYPERVISOR", ["kvm", "xen-pvm"], ["KVM", "kvm;x"]),
    ("INSTANCE_HV_root_path", ["/dev/vda1", "UUID=0c8b4a8e-0f55", "/dev/disk/by-label/root"],
     ["/dev/vda1 init=/bin/sh", "/dev/vda1\nERROR: forged"]),
    ("INSTANCE_HV_serial_console", ["True", "False", "true"], ["yes", "1"]),
    ("INSTANCE_HV_boot_type", ["bios", "uefi", "direct_kernel"], ["UEFI", "efi", "bios\nx"]),
    ("INSTANCE_BE_maxmem", ["512", "1048576"], ["512M", "lots"]),
    ("INSTANCE_BE_memory", ["512"], ["-512"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "value"), [(v, good) for v, goods, _ in CHECKED for good in goods]
)
def test_good_values_pass(variable: str, value: str) -> None:
    osenv.parse("create", env_for("create", **{**NIC0_NETWORK, variable: value}))


@pytest.mark.parametrize(
    ("variable", "value"), [(v, bad) for v, _, bads in CHECKED for bad in bads]
)
def test_bad_values_are_one_line_naming_the_variable_and_the_allowed_values(
    variable: str, value: str
) -> None:
    message = failure("create", env_for("create", **{**NIC0_NETWORK, variable: value}))
    assert message.startswith(f"{variable}: bad value ")
    assert "; allowed values: " in message


@pytest.mark.parametrize("operation", ["create", "import", "export", "rename"])
def test_the_attacks_are_refused_by_every_operation(operation: str) -> None:
    for variable, value in (("NIC_0_NETWORK_GATEWAY", GATEWAY_ATTACK), ("NIC_0_MAC", MAC_ATTACK)):
        message = failure(operation, env_for(operation, **{**NIC0_NETWORK, variable: value}))
        assert message.startswith(f"{variable}: bad value ")


def test_a_bad_mac_with_an_ipv6_subnet_is_a_clean_error() -> None:
    message = failure("create", env_for("create", **NIC0_NETWORK, NIC_0_MAC="zz:zz"))
    assert message == (
        "NIC_0_MAC: bad value 'zz:zz'; allowed values: six colon-separated hex octets "
        "such as aa:00:00:12:34:56"
    )


def test_a_routed_nic_links_to_a_routing_table() -> None:
    table = "ganeti_routed_instances"  # longer than an interface name may be
    env = osenv.parse("create", env_for("create", NIC_0_MODE="routed", NIC_0_LINK=table))
    assert env.nics[0].link == table
    message = failure("create", env_for("create", NIC_0_LINK=table))
    assert message.startswith(f"NIC_0_LINK: bad value '{table}'; allowed values: a Linux interface")
    message = failure("create", env_for("create", NIC_0_MODE="routed", NIC_0_LINK="t;x"))
    assert message.startswith("NIC_0_LINK: bad value 't;x'; allowed values: a routing table")


def test_nics_beyond_nic_count_are_not_read() -> None:
    assert len(osenv.parse("create", env_for("create", NIC_1_MAC="zz")).nics) == 1


def test_values_are_kept_in_their_canonical_spelling() -> None:
    env = osenv.parse(
        "create",
        env_for(
            "create",
            NIC_0_MAC="AA:00:00:12:34:5F",
            NIC_0_IP="2001:DB8:1:0::10",
            NIC_0_NETWORK_SUBNET="192.0.2.7/24",
            NIC_0_NETWORK_SUBNET6="2001:DB8:1:0::/64",
            NIC_0_NETWORK_GATEWAY6="2001:DB8:1::0001",
        ),
    )
    nic = env.nics[0]
    assert (nic.mac, str(nic.ip), str(nic.subnet), str(nic.subnet6), str(nic.gateway6)) == (
        "aa:00:00:12:34:5f",
        "2001:db8:1::10",
        "192.0.2.0/24",
        "2001:db8:1::/64",
        "2001:db8:1::1",
    )


def test_a_gateway_outside_its_subnet_is_refused() -> None:
    message = failure(
        "create", env_for("create", **{**NIC0_NETWORK, "NIC_0_NETWORK_GATEWAY": "198.51.100.1"})
    )
    assert message == (
        "NIC_0_NETWORK_GATEWAY: 198.51.100.1 is outside NIC_0_NETWORK_SUBNET 192.0.2.0/24; "
        "allowed values: an address inside the subnet"
    )
    message = failure(
        "create", env_for("create", **{**NIC0_NETWORK, "NIC_0_NETWORK_GATEWAY6": "2001:db8:9::1"})
    )
    assert message.startswith("NIC_0_NETWORK_GATEWAY6: 2001:db8:9::1 is outside NIC_0_NETWORK_")
    # Link-local IPv6 gateways are what router advertisements announce: allowed.
    env = osenv.parse(
        "create", env_for("create", **{**NIC0_NETWORK, "NIC_0_NETWORK_GATEWAY6": "fe80::1"})
    )
    assert str(env.nics[0].gateway6) == "fe80::1"


def test_hv_and_be_parameters_the_scripts_do_not_use_are_left_to_hooks() -> None:
    env = osenv.parse(
        "create", env_for("create", INSTANCE_HV_kernel_args="ro quiet", INSTANCE_BE_maxmem="1024")
    )
    assert env.hv["kernel_args"] == "ro quiet"
    assert env.maxmem_mib == 1024


def test_export_and_import_devices_are_absolute_paths() -> None:
    for operation in ("export", "import"):
        variable = f"{operation.upper()}_DEVICE"
        message = failure(operation, env_for(operation, **{variable: "snap0"}))
        assert message.startswith(f"{variable}: bad value 'snap0'; allowed values: an absolute")


def test_long_values_are_cut_in_the_error() -> None:
    message = failure("create", env_for("create", NIC_0_MAC="a" * 1000))
    assert len(message) < 250 and "...'" in message
