"""layout.plan: pure partition plans from the settings and the disk size."""

from __future__ import annotations

import dataclasses

import pytest

from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import fstab, layout
from gentoobootstrap.errors import ConfigError, DiskError, OSEnvError

MIB = layout.MIB
GIB = 1024 * MIB


def settings(**changes: object) -> Settings:
    return dataclasses.replace(Settings(), **changes)


def roles(plan: layout.Layout) -> list[tuple[int, str, int, int]]:
    return [(p.number, p.role, p.start // MIB, p.size // MIB) for p in plan.partitions]


def test_default_is_one_msdos_root_partition_from_1mib_to_the_end() -> None:
    plan = layout.plan(Settings(), 4 * GIB, root_path="/dev/vda1")
    assert plan.style == "msdos"
    assert roles(plan) == [(1, "root", 1, 4095)]
    assert plan.root.fstype == "ext4" and plan.root.mountpoint == "/"


def test_root_is_partition_1_but_last_on_the_disk_after_boot_and_swap() -> None:
    plan = layout.plan(
        settings(boot_size=128, swap="yes", swap_size=512), 4 * GIB, root_path="/dev/vda1"
    )
    assert roles(plan) == [(1, "root", 641, 3455), (2, "boot", 1, 128), (3, "swap", 129, 512)]
    assert plan.role("boot").fstype == layout.BOOT_FILESYSTEM  # type: ignore[union-attr]
    assert plan.role("swap").fstype == "swap"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("root_path", "expected"),
    [
        ("/dev/vda2", [(1, "boot"), (2, "root"), (3, "swap")]),
        ("/dev/sda3", [(1, "boot"), (2, "swap"), (3, "root")]),
        ("/dev/xvda1", [(1, "root"), (2, "boot"), (3, "swap")]),
        ("/dev/nvme0n1p2", [(1, "boot"), (2, "root"), (3, "swap")]),
        ("", [(1, "root"), (2, "boot"), (3, "swap")]),
        ("UUID=1234", [(1, "root"), (2, "boot"), (3, "swap")]),
        ("/dev/vdb2", [(1, "root"), (2, "boot"), (3, "swap")]),  # not the first disk
    ],
)
def test_root_goes_on_the_partition_root_path_names(
    root_path: str, expected: list[tuple[int, str]]
) -> None:
    plan = layout.plan(
        settings(boot_size=64, swap="yes", swap_size=256), 2 * GIB, root_path=root_path
    )
    assert [(p.number, p.role) for p in plan.partitions] == expected
    # On the disk: contiguous, aligned, boot then swap, and root last up to the disk's end.
    on_disk = sorted(plan.partitions, key=lambda p: p.start)
    assert [p.role for p in on_disk] == ["boot", "swap", "root"]
    start = MIB
    for p in on_disk:
        assert p.start == start and p.size % MIB == 0
        start += p.size
    assert start == 2 * GIB


@pytest.mark.parametrize(
    ("style", "boot", "swap", "number"),
    [
        (style, boot, swap, number)
        for style in ("msdos", "gpt")
        for boot in (0, 64)
        for swap in ("no", "yes", "file")
        for number in range(1, 2 + bool(boot) + (swap == "yes"))
    ],
)
def test_root_is_always_last_on_the_disk_whatever_its_number(
    style: str, boot: int, swap: str, number: int
) -> None:
    """What lets root grow into space added at the disk's end: nothing lies after it."""
    plan = layout.plan(
        settings(partition_style=style, boot_size=boot, swap=swap, swap_size=64),
        GIB,
        root_path=f"/dev/vda{number}",
    )
    assert plan.root.number == number
    assert max(plan.partitions, key=lambda p: p.start) is plan.root
    assert plan.root.start + plan.root.size == GIB - (MIB if style == "gpt" else 0)


def test_root_path_beyond_the_layout_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"INSTANCE_HV_root_path: /dev/vda3 names partition 3"):
        layout.plan(settings(swap="yes", swap_size=64), GIB, root_path="/dev/vda3")


def test_gpt_keeps_the_last_mib_for_its_backup_table() -> None:
    plan = layout.plan(settings(partition_style="gpt", boot_firmware="bios"), GIB)
    assert roles(plan)[0] == (1, "root", 1, 1022)


def test_gpt_gets_a_bios_boot_partition_before_the_first_mib_numbered_last() -> None:
    plan = layout.plan(
        settings(partition_style="gpt", boot_firmware="bios", swap="yes", swap_size=64), GIB
    )
    assert [(p.number, p.role) for p in plan.partitions] == [(1, "root"), (2, "swap"), (3, "bios")]
    bios = plan.partitions[-1]
    assert bios.start == 64 << 10 and bios.start + bios.size == layout.MIB
    assert "3 BIOS boot" in plan.describe()
    assert plan.firmware == ("bios",)


@pytest.mark.parametrize("firmware", ["", "both"])
def test_gpt_boots_under_bios_and_uefi_by_default(firmware: str) -> None:
    """The ESP first on the disk, numbered after boot and swap; BIOS boot after it; root
    keeps its number and the disk's end."""
    plan = layout.plan(
        settings(
            partition_style="gpt", boot_firmware=firmware, boot_size=64, swap="yes", swap_size=64
        ),
        GIB,
        root_path="/dev/vda2",
    )
    assert roles(plan) == [
        (1, "boot", 101, 64),
        (2, "root", 229, 794),
        (3, "swap", 165, 64),
        (4, "esp", 1, 100),
        (5, "bios", 0, 0),
    ]
    esp = plan.role("esp")
    assert esp is not None and esp.fstype == "vfat" and esp.mountpoint == "/efi"
    assert esp.size == layout.ESP_MIB * MIB
    assert plan.root.start + plan.root.size == GIB - MIB  # physically last, up to the backup
    assert max(p.start for p in plan.partitions) == plan.root.start
    assert plan.firmware == ("bios", "uefi")
    assert "4 esp vfat 100 MiB" in plan.describe()
    assert plan.sfdisk_script().splitlines()[-2:] == [
        "4: start=2048, size=204800, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "5: start=128, size=1920, type=21686148-6449-6E6F-744E-656564454649",
    ]


def test_gpt_for_uefi_alone_has_no_bios_boot_partition() -> None:
    plan = layout.plan(settings(partition_style="gpt", boot_firmware="uefi"), GIB)
    assert roles(plan) == [(1, "root", 101, 922), (2, "esp", 1, 100)]
    assert plan.firmware == ("uefi",)
    assert "first-lba" not in plan.sfdisk_script()


def test_the_esp_counts_in_the_size_needed() -> None:
    with pytest.raises(DiskError, match=r"at least 402 MiB \(EFI system 100 MiB \+ root 300"):
        layout.plan(settings(partition_style="gpt", filesystem="xfs"), 400 * MIB)
    layout.plan(settings(partition_style="gpt", boot_firmware="bios", filesystem="xfs"), 400 * MIB)


@pytest.mark.parametrize("firmware", ["uefi", "both"])
def test_msdos_boots_only_under_bios(firmware: str) -> None:
    with pytest.raises(ConfigError, match=f"BOOT_FIRMWARE: {firmware} needs an EFI system"):
        layout.plan(settings(boot_firmware=firmware), GIB)
    for allowed in ("", "bios"):
        plan = layout.plan(settings(boot_firmware=allowed), GIB)
        assert plan.firmware == ("bios",) and plan.role("esp") is None


def test_style_none_takes_no_boot_firmware() -> None:
    assert layout.plan(settings(partition_style="none"), GIB).firmware == ()
    with pytest.raises(ConfigError, match="BOOT_FIRMWARE: PARTITION_STYLE=none"):
        layout.plan(settings(partition_style="none", boot_firmware="bios"), GIB)


@pytest.mark.parametrize(
    ("style", "firmware", "boot_type", "error"),
    [
        ("gpt", "", "uefi", None),
        ("gpt", "", "bios", None),
        ("gpt", "uefi", "uefi", None),
        ("msdos", "", "bios", None),
        ("msdos", "", "direct_kernel", None),
        ("none", "", "direct_kernel", None),
        ("msdos", "", "", None),
        (
            "msdos",
            "",
            "uefi",
            "INSTANCE_HV_boot_type: uefi, but the disk's msdos layout boots only under bios: "
            'set PARTITION_STYLE="gpt" with BOOT_FIRMWARE empty, uefi or both in the variant, '
            "or boot the instance with boot_type=bios",
        ),
        (
            "gpt",
            "bios",
            "uefi",
            "INSTANCE_HV_boot_type: uefi, but the disk's gpt layout boots only under bios: ",
        ),
        (
            "gpt",
            "uefi",
            "bios",
            "INSTANCE_HV_boot_type: bios, but the disk's gpt layout boots only under uefi: "
            "set BOOT_FIRMWARE empty, bios or both in the variant, or boot the instance with "
            "boot_type=uefi",
        ),
        (
            "none",
            "",
            "bios",
            "INSTANCE_HV_boot_type: bios, but the disk's none layout has no boot partitions: ",
        ),
    ],
)
def test_boot_type_is_checked_against_the_layout(
    style: str, firmware: str, boot_type: str, error: str | None
) -> None:
    plan = layout.plan(settings(partition_style=style, boot_firmware=firmware), GIB)
    if error is None:
        layout.check_boot_type(plan, boot_type)
    else:
        with pytest.raises(OSEnvError) as raised:
            layout.check_boot_type(plan, boot_type)
        assert str(raised.value).startswith(error)


def test_style_none_puts_root_on_the_whole_disk() -> None:
    plan = layout.plan(settings(partition_style="none", filesystem="xfs"), GIB)
    assert roles(plan) == [(0, "root", 0, 1024)]
    with pytest.raises(ValueError):
        plan.sfdisk_script()


@pytest.mark.parametrize("change", [{"swap": "yes", "swap_size": 64}, {"boot_size": 64}])
def test_style_none_refuses_swap_and_boot(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="PARTITION_STYLE=none"):
        layout.plan(settings(partition_style="none", **change), GIB)


def test_swap_defaults_to_maxmem() -> None:
    plan = layout.plan(settings(swap="yes"), 2 * GIB, maxmem_mib=768)
    assert plan.role("swap").size == 768 * MIB  # type: ignore[union-attr]


def test_swap_without_size_or_maxmem_names_swap_size() -> None:
    with pytest.raises(ConfigError, match="SWAP_SIZE"):
        layout.plan(settings(swap="yes"), 2 * GIB, maxmem_mib=None)


def test_too_small_disk_names_found_and_needed_sizes() -> None:
    with pytest.raises(DiskError) as e:
        layout.plan(settings(filesystem="xfs", swap="yes", swap_size=512), 600 * MIB)
    message = str(e.value)
    assert "has 600 MiB" in message and "needs at least 813 MiB" in message
    assert "swap 512 MiB" in message and "root 300 MiB (xfs)" in message


def test_swap_file_makes_no_partition_and_counts_in_roots_minimum() -> None:
    plan = layout.plan(settings(swap="file", swap_size=512), GIB)
    assert roles(plan) == [(1, "root", 1, 1023)] and plan.swap_file == 512 * MIB
    assert plan.describe() == "msdos: 1 root ext4 1023 MiB, swap file 512 MiB"
    assert "type=S" not in plan.sfdisk_script()
    with pytest.raises(DiskError) as e:
        layout.plan(settings(filesystem="xfs", swap="file", swap_size=512), 600 * MIB)
    assert "needs at least 813 MiB" in str(e.value)
    assert "root 812 MiB (xfs, swap file 512 MiB)" in str(e.value)
    with pytest.raises(DiskError, match=r"root 1564 MiB \(ext4, swap file 64 MiB\)"):
        layout.plan(settings(swap="file", swap_size=64), GIB, min_root_mib=1500)


def test_swap_file_defaults_to_maxmem_and_needs_a_size() -> None:
    assert layout.plan(settings(swap="file"), 2 * GIB, maxmem_mib=768).swap_file == 768 * MIB
    with pytest.raises(ConfigError, match="SWAP=file but SWAP_SIZE is empty"):
        layout.plan(settings(swap="file"), 2 * GIB)
    with pytest.raises(ConfigError, match="SWAP_SIZE: 8 MiB is below the minimum"):
        layout.plan(settings(swap="file", swap_size=8), 2 * GIB)


def test_swap_file_works_without_a_partition_table() -> None:
    plan = layout.plan(settings(partition_style="none", swap="file", swap_size=64), GIB)
    assert roles(plan) == [(0, "root", 0, 1024)] and plan.swap_file == 64 * MIB


def test_a_swap_partition_is_no_swap_file() -> None:
    assert layout.plan(settings(swap="yes", swap_size=64), GIB).swap_file == 0


def test_never_below_256_mb() -> None:
    with pytest.raises(DiskError, match="has 255 MiB but this layout needs at least 256 MiB"):
        layout.plan(Settings(), 255 * MIB)
    with pytest.raises(DiskError, match="needs at least 256 MiB"):
        layout.plan(settings(partition_style="none"), 200 * MIB)
    assert layout.plan(Settings(), 256 * MIB).root.size == 255 * MIB


def test_stage_size_raises_the_root_minimum() -> None:
    with pytest.raises(DiskError, match=r"root 1500 MiB \(ext4\)"):
        layout.plan(Settings(), GIB, min_root_mib=1500)


def test_small_boot_is_refused() -> None:
    with pytest.raises(ConfigError, match="BOOT_SIZE: 8 MiB is below the minimum"):
        layout.plan(settings(boot_size=8), GIB)


def test_sfdisk_script_in_sectors_with_types_and_boot_flag() -> None:
    plan = layout.plan(settings(boot_size=64, swap="yes", swap_size=64), GIB)
    assert plan.sfdisk_script() == (
        "label: dos\nunit: sectors\n\n"
        "1: start=264192, size=1832960, type=L\n"
        "2: start=2048, size=131072, type=L, bootable\n"
        "3: start=133120, size=131072, type=S\n"
    )
    gpt = layout.plan(settings(partition_style="gpt", boot_firmware="bios"), GIB)
    assert gpt.sfdisk_script(4096) == (
        "label: gpt\nunit: sectors\nfirst-lba: 16\n\n"
        "1: start=256, size=261632, type=L\n"
        "2: start=16, size=240, type=21686148-6449-6E6F-744E-656564454649\n"
    )


def test_describe() -> None:
    plan = layout.plan(settings(swap="yes", swap_size=64), GIB)
    assert plan.describe() == "msdos: 1 root ext4 959 MiB, 2 swap 64 MiB"


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("/dev/vda1", 1),
        ("/dev/sda12", 12),
        ("/dev/xvda3", 3),
        ("/dev/nvme0n1p2", 2),
        ("/dev/vda0", None),  # numbers count from 1: 0 is the whole disk in this project
        ("/dev/vda01", None),
        ("/dev/vdb1", None),
        ("/dev/vda", None),
    ],
)
def test_one_rule_names_the_first_disks_partitions(name: str, number: object) -> None:
    assert layout.first_disk_partition(name) == number


def test_an_fstab_swap_on_partition_0_is_not_taken_for_the_first_disks() -> None:
    kept = "/dev/vda0\tnone\tswap\tsw\t0 0"
    assert kept in fstab.rewrite(kept + "\n", {}).splitlines()
    assert "/dev/vda2\tnone" not in fstab.rewrite("/dev/vda2\tnone\tswap\tsw\t0 0\n", {})
