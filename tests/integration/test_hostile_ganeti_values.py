"""create, run as Ganeti runs it, with hostile values in Ganeti's variables: each is one
ERROR line naming the variable, no traceback, the disk untouched, nothing left attached or
mounted, and the canary the injection would make never made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import NIC0_NETWORK, REPO, ganeti_environ, leaks, osdef, stage

pytestmark = pytest.mark.root

#: variable -> hostile value; CANARY is the node file the injection would make.
ATTACKS = {
    "gateway-shell": ("NIC_0_NETWORK_GATEWAY", '192.0.2.1"; touch CANARY; "'),
    "gateway6-scope": ("NIC_0_NETWORK_GATEWAY6", "fe80::1%$(touch CANARY)"),
    "mac-networkd-keys": (
        "NIC_0_MAC",
        "aa:00:00:12:34:56\n\n[Network]\nDNS=203.0.113.66\n[Match]\nName=CANARY",
    ),
    "mac-malformed-ipv6": ("NIC_0_MAC", "zz:zz"),
    "link-shell": ("NIC_0_LINK", "br0`touch CANARY`"),
    "root-path-newline": ("INSTANCE_HV_root_path", "/dev/vda1\nERROR: forged CANARY"),
    "name-shell": ("INSTANCE_NAME", "web1;touch CANARY"),
}


def run_create(
    tmp: Path, built: stage.Stage, network: str, **values: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """create in a child process with Ganeti's cleared environment plus ``values``."""
    image = tmp / "disk.img"
    with open(image, "wb") as f:
        f.truncate(320 << 20)
    confdir = osdef.configure(tmp / "conf", stage4_file=built.tarball, network=network)
    environ = ganeti_environ(image, "web1.example.com", **NIC0_NETWORK)
    environ.update(values)
    environ.update(PYTHONPATH=f"{REPO / 'python'}:{REPO / 'tests'}", TMPDIR=str(confdir / "tmp"))
    result = subprocess.run(
        [sys.executable, "-m", "support.osdef", str(confdir)],
        env=environ,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    return result, image


@pytest.mark.parametrize("network", ["ganeti", "dhcp"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_hostile_values_are_one_error_and_touch_nothing(
    attack: str, network: str, no_leaks: Path, stages: dict[tuple[str, str], stage.Stage]
) -> None:
    built = stages["openrc" if network == "ganeti" else "systemd", "zstd"]
    canary = no_leaks / "canary"
    variable, value = ATTACKS[attack]

    result, image = run_create(
        no_leaks, built, network, **{variable: value.replace("CANARY", str(canary))}
    )

    log = result.stdout + result.stderr
    assert result.returncode == 1, log
    assert result.stdout == ""
    # A newline in a value would make a second line (a forged "ERROR: ..." among them).
    errors = [line for line in log.splitlines() if "ERROR:" in line]
    assert len(errors) == 1 and errors[0] == log.strip().splitlines()[-1], log
    assert f"ERROR: create: {variable}: bad value " in errors[0]
    assert "allowed values: " in errors[0]
    assert "Traceback" not in log
    assert not canary.exists()
    assert os.stat(image).st_blocks == 0  # not a byte written: nothing reached the guest
    assert not leaks(no_leaks)


def test_the_same_create_with_sound_values_writes_an_inert_netifrc_config(
    no_leaks: Path, stages: dict[tuple[str, str], stage.Stage]
) -> None:
    """The control: the harness above does reach the guest when the values are sound."""
    result, image = run_create(no_leaks, stages["openrc", "zstd"], "ganeti")
    assert result.returncode == 0, result.stderr
    (part,) = osdef.partitions(image)
    with osdef.mounted(image, no_leaks / "check", part["start"], part["size"]) as root:
        net = root / "etc/conf.d/net"
        script = '. "$1"; printf "%s|%s" "$config_eth0" "$routes_eth0"'
        out = subprocess.run(
            ["sh", "-c", script, "sh", str(net)], capture_output=True, text=True, check=True
        )
    assert out.stdout == (
        "192.0.2.10/24\n2001:db8:1:0:a800:ff:fe12:3456/64"
        "|default via 192.0.2.1\ndefault via 2001:db8:1::1"
    )
