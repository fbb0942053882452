"""Every setting of the defaults file and the variant files, declared once.

Each field of :class:`Settings` is one ``KEY="value"`` setting (the key is the
field name upper-cased).  Its declaration — default, kind (how a value is
parsed and which values are allowed) and one line of help — drives parsing
and validation (:mod:`gentoobootstrap.config.files`), the shipped defaults file
(:func:`defaults_file_text`) and the README's reference table.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, TypeVar, get_args

from gentoobootstrap import paths
from gentoobootstrap.disk.filesystems import ROOT_FILESYSTEMS

T = TypeVar("T")
#: A check takes a raw value and returns it parsed (or in its one canonical spelling), or raises
#: ValueError("allowed values: ...").  The settings' kinds and Ganeti's variables share them.
Check = Callable[[str], T]


def _named(values: tuple[str, ...]) -> list[str]:
    """``values`` as messages and the documentation show them: an empty one is ``empty``."""
    return [value or "empty" for value in values]


def choice(*values: str) -> Check[str]:
    """One of ``values``."""
    allowed = ", ".join(_named(values))

    def check(raw: str) -> str:
        if raw not in values:
            raise ValueError(f"allowed values: {allowed}")
        return raw

    return check


def pattern(regex: re.Pattern[str] | str, allowed: str) -> Check[str]:
    """A value ``regex`` matches in full; ``allowed`` describes those values."""
    compiled = re.compile(regex)

    def check(raw: str) -> str:
        if not compiled.fullmatch(raw):
            raise ValueError(f"allowed values: {allowed}")
        return raw

    return check


def whole(low: int = 0, high: Optional[int] = None, unit: str = "") -> Check[int]:
    """A whole number (of ``unit``) from ``low`` to ``high`` (inclusive; None: no upper bound).

    Only ASCII digits: int() would take other scripts' digits and surrounding blanks too.
    """
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}" if low else ""
    allowed = " ".join(filter(None, ("a whole number", unit and f"of {unit}", bounds)))

    def check(raw: str) -> int:
        value = int(raw) if raw.isascii() and raw.isdigit() else -1
        if value < low or (high is not None and value > high):
            raise ValueError(f"allowed values: {allowed}")
        return value

    return check


@dataclass(frozen=True)
class Kind:
    """How a raw string becomes a value; ``parse`` raises ValueError naming the allowed values."""

    allowed: str
    parse: Callable[[str], Any]


def _choice(*values: str) -> Kind:
    return Kind(" | ".join(_named(values)), choice(*values))


def _pattern(allowed: str, regex: str) -> Kind:
    return Kind(allowed, pattern(regex, allowed))


def _yesno(raw: str) -> bool:
    value = raw.lower()
    if value not in ("yes", "no"):
        raise ValueError("allowed values: yes, no")
    return value == "yes"


def _count(unit: str, optional: bool = False) -> Kind:
    number = whole(0, unit=unit)
    if not optional:
        return Kind(unit, number)

    def parse(raw: str) -> Optional[int]:
        if raw == "":
            return None
        try:
            return number(raw)
        except ValueError as e:
            raise ValueError(f"{e} or empty") from None

    return Kind(f"{unit} (empty: see help)", parse)


def _path(optional: bool) -> Kind:
    def parse(raw: str) -> Optional[Path]:
        if raw == "":
            if optional:
                return None
            raise ValueError("allowed values: an absolute path")
        if not raw.startswith("/"):
            raise ValueError("allowed values: an absolute path" + (" or empty" if optional else ""))
        return Path(raw)

    return Kind("absolute path" + (" or empty" if optional else ""), parse)


def _url(optional: bool, schemes: tuple[str, ...] = ("http", "https", "file")) -> Kind:
    def parse(raw: str) -> str:
        if raw == "" and optional:
            return ""
        if not re.fullmatch(r"[a-z]+://\S*", raw) or raw.split("://")[0] not in schemes:
            allowed = ", ".join(f"{s}://..." for s in schemes)
            raise ValueError(
                f"allowed values: a URL ({allowed})" + (" or empty" if optional else "")
            )
        return raw.rstrip("/")

    return Kind("URL" + (" or empty" if optional else ""), parse)


def _path_or_url(raw: str) -> str:
    if raw and not (raw.startswith("/") or re.fullmatch(r"(https?|file)://\S+", raw)):
        raise ValueError("allowed values: an absolute path, an http(s):// or file:// URL, or empty")
    return raw


def _swap(raw: str) -> str:
    value = raw.lower()
    if value not in get_args(Swap):
        raise ValueError(f"allowed values: {', '.join(get_args(Swap))}")
    return value


def _root_password(raw: str) -> str:
    if raw in ("empty", "locked") or re.fullmatch(r"\$[0-9a-z]+\$[^:\s]+", raw):
        return raw
    raise ValueError("allowed values: empty, locked, or a crypt(3) hash such as $6$salt$hash")


def _text(raw: str) -> str:
    return raw


TEXT = Kind("text", _text)
YESNO = Kind("yes | no", _yesno)
MIB = _count("MiB")


def setting(default: str, help: str, kind: Kind = TEXT) -> Any:
    """Declare one setting: its raw default (as written in the defaults file), help and kind."""
    return dataclasses.field(
        default=kind.parse(default), metadata={"raw": default, "help": help, "kind": kind}
    )


#: How downloads are verified, strongest first.
VerifyMode = Literal["signature", "checksum", "none"]
#: The partition table create writes ("none": the root filesystem on the whole disk).
PartitionStyle = Literal["msdos", "gpt", "none"]
#: Where swap goes: a partition, a file on root, or nowhere.
Swap = Literal["yes", "file", "no"]
#: What BOOT_FIRMWARE asks for ("": what the partition style allows).
BootFirmware = Literal["", "bios", "uefi", "both"]


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one variant (defaults file, then the variant file over it)."""

    # Where the stage comes from and how it is trusted.
    mirror: str = setting(
        "https://distfiles.gentoo.org", "Gentoo mirror (http, https or file:// URL)", _url(False)
    )
    arch: str = setting(
        "",
        "Gentoo arch name; empty: the node's (x86_64 -> amd64, aarch64 -> arm64)",
        _pattern("empty or a Gentoo arch name such as amd64", r"[a-z0-9_]*"),
    )
    stage3_flavor: str = setting(
        "openrc",
        "stage3 flavour: the part after ARCH in latest-stage3-ARCH-FLAVOR.txt",
        _pattern("a flavour such as openrc, systemd, hardened-openrc", r"[a-z0-9][a-z0-9-]*"),
    )
    stage4_file: str = setting(
        "",
        "path or URL of a stage4 tarball used instead of the stage3",
        Kind("path or URL", _path_or_url),
    )
    catalyst_spec: Optional[Path] = setting(
        "", "catalyst spec that builds STAGE4_FILE once when it does not exist", _path(True)
    )
    portage_confdir: Optional[Path] = setting(
        "", "directory copied over the guest's /etc/portage", _path(True)
    )
    snapshot: str = setting(
        "",
        "portage snapshot to unpack: empty (none), latest or YYYYMMDD",
        _pattern("empty, latest or YYYYMMDD", r"(|latest|[0-9]{8})"),
    )
    keyring: Path = setting(
        "/usr/share/openpgp-keys/gentoo-release.asc",
        "OpenPGP public keys trusted to sign stages and snapshots",
        _path(False),
    )
    verify: VerifyMode = setting(
        "signature", "how downloads are verified", _choice(*get_args(VerifyMode))
    )
    proxy: str = setting(
        "", "HTTP(S) proxy for downloads, e.g. http://proxy:3128", _url(True, ("http", "https"))
    )
    cache_dir: Path = setting(
        str(paths.CACHE_DIR), "where verified stages and snapshots are kept", _path(False)
    )
    clean_cache: int = setting(
        "14", "days a cached stage is reused without asking the mirror", _count("days")
    )
    prepared_images: bool = setting(
        "yes",
        "install the root filesystem from an image of the stage prepared once in CACHE_DIR "
        "(no: always unpack the stage)",
        YESNO,
    )
    allow_older_stage: bool = setting(
        "no",
        "install a stage3 or latest snapshot older than the cached one (no: refuse a rollback)",
        YESNO,
    )
    # The disk.
    partition_style: PartitionStyle = setting(
        "msdos",
        "partition table: msdos, gpt, or none (filesystem on the whole disk)",
        _choice(*get_args(PartitionStyle)),
    )
    boot_size: int = setting("0", "size of a separate /boot partition in MiB; 0: no /boot", MIB)
    swap: Swap = setting(
        "no",
        "swap: yes (a partition before root), file (/swapfile on root, no partition) or no",
        Kind(" | ".join(get_args(Swap)), _swap),
    )
    swap_size: Optional[int] = setting(
        "", "swap size in MiB; empty: the instance's maxmem", _count("MiB", optional=True)
    )
    filesystem: str = setting(
        "ext4", "root filesystem (the filesystem OS parameter wins)", _choice(*ROOT_FILESYSTEMS)
    )
    boot_firmware: BootFirmware = setting(
        "",
        "firmware the instance boots its own disk under: bios (GRUB's i386-pc), uefi (an EFI "
        "system partition) or both; empty: both with gpt, bios with msdos; uefi needs gpt",
        _choice(*get_args(BootFirmware)),
    )
    grow_root: bool = setting(
        "yes",
        "the guest grows its root partition and filesystem to fill the disk, at boot and when "
        "the disk grows",
        YESNO,
    )
    kernel_args: str = setting(
        "", "extra kernel command line for guests that boot from their own disk"
    )
    # The guest.
    customize_dir: Path = setting(
        str(paths.HOOKS_DIR), "directory of customization hooks (run-parts rules)", _path(False)
    )
    network: str = setting(
        "none",
        "guest network: none (lo only), dhcp on every NIC, or ganeti (from Ganeti's NIC settings)",
        _choice("none", "dhcp", "ganeti"),
    )
    root_password: str = setting(
        "empty",
        "root login: empty (no password, console login), locked, or a crypt hash",
        Kind("empty | locked | crypt hash", _root_password),
    )
    ssh_authorized_keys: Optional[Path] = setting(
        "", "file of SSH public keys for root; enables sshd", _path(True)
    )
    timezone: str = setting(
        "",
        "time zone such as Europe/Berlin; empty: the stage's (UTC)",
        _pattern(
            "empty or a zoneinfo name such as Europe/Berlin",
            r"(|[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*)",
        ),
    )
    copy_resolv_conf: bool = setting(
        "yes", "copy the node's /etc/resolv.conf into the guest", YESNO
    )
    debug: bool = setting("no", "log every command run (Ganeti's DEBUG_LEVEL also does)", YESNO)


@dataclass(frozen=True)
class Declaration:
    key: str
    field: str
    raw_default: str
    help: str
    kind: Kind


def declarations() -> Iterator[Declaration]:
    for f in dataclasses.fields(Settings):
        yield Declaration(
            f.name.upper(), f.name, f.metadata["raw"], f.metadata["help"], f.metadata["kind"]
        )


DECLARATIONS = {d.key: d for d in declarations()}


def defaults_file_text() -> str:
    """The shipped defaults file: every setting as a commented line with its default and help."""
    lines = [
        "# ganeti-instance-gentoobootstrap: settings for every variant.",
        "# Variants override them in instance-gentoobootstrap/variants/VARIANT.conf.",
        '# Lines are KEY="value"; they are read as data, never executed.',
        "",
    ]
    for d in declarations():
        lines += [f"# {d.key}: {d.help} ({d.kind.allowed})", f'#{d.key}="{d.raw_default}"', ""]
    return "\n".join(lines)


def reference_table() -> str:
    """The README's configuration reference (Markdown)."""
    rows = ["| Setting | Default | Allowed | Meaning |", "|---|---|---|---|"]
    for d in declarations():
        default = f"`{d.raw_default}`" if d.raw_default else "(empty)"
        cells = (f"`{d.key}`", default, d.kind.allowed, d.help)
        rows.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def markdown_cell(text: str) -> str:
    """``text`` fit for a Markdown table cell: a literal ``|`` would split the cell."""
    return text.replace("|", "\\|")
