"""Manual pages, written at build time from the declarations that drive ``--help``,
the defaults file and the README tables.

``gentoobootstrap-try(8)`` and ``gentoobootstrap-fetch(8)`` come from the commands'
argument parsers; ``ganeti-instance-gentoobootstrap(7)``, the OS definition as a Ganeti
admin meets it, from the settings, the OS parameters, the hooks module and the
configured paths.  The pages are plain man(7) roff.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from typing import Callable

from gentoobootstrap import paths
from gentoobootstrap.config import osenv, parameters, settings
from gentoobootstrap.guest import hooks
from gentoobootstrap.scripts import prefetch, tryit

PACKAGE = "ganeti-instance-gentoobootstrap"


def roff(text: str) -> str:
    """Plain text as roff: backslashes, hyphens and leading control characters escaped;
    ``literal`` (reST/Markdown style) in bold."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"``?([^`]+)``?", r"\\fB\1\\fR", text)
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _header(name: str, section: int, summary: str) -> list[str]:
    return [
        f'.TH {name.upper()} {section} "" "{PACKAGE} {paths.VERSION}"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(summary)}",
    ]


def _tagged(tag: str, text: str) -> list[str]:
    return [".TP", tag, roff(text)]


def _option_tag(action: argparse.Action) -> str:
    metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else None)
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.choices and not action.metavar:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    names = action.option_strings or [str(action.metavar or action.dest)]
    words = []
    for name in names:
        word = f"\\fB{roff(name)}\\fR" if action.option_strings else f"\\fI{roff(name)}\\fR"
        if action.option_strings and metavar and action.nargs != 0:
            word += f" \\fI{roff(str(metavar))}\\fR"
        words.append(word)
    return ", ".join(words)


def _options(parser: argparse.ArgumentParser) -> Iterable[str]:
    for action in parser._actions:  # argparse's documented help output walks the same list
        if action.help == argparse.SUPPRESS:
            continue
        text = (action.help or "").rstrip(".")
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += f" (default: {action.default})"
        yield from _tagged(_option_tag(action), text + ".")


def command_page(
    parser: argparse.ArgumentParser, summary: str, body: Iterable[str], see_also: str
) -> str:
    """A section 8 page for one command: usage and options from its parser."""
    prog = parser.prog
    usage = parser.format_usage().removeprefix("usage: ").strip()
    usage = re.sub(r"\s+", " ", usage.removeprefix(prog).strip())
    lines = [
        *_header(prog, 8, summary),
        ".SH SYNOPSIS",
        f"\\fB{roff(prog)}\\fR {roff(usage)}",
        ".SH DESCRIPTION",
        roff(parser.description or ""),
        *body,
        ".SH OPTIONS",
        *_options(parser),
        ".SH FILES",
        *_tagged(f"\\fI{roff(str(paths.DEFAULTS_FILE))}\\fR", "the defaults file (every setting)"),
        *_tagged(f"\\fI{roff(str(paths.VARIANTS_DIR))}/\\fR", "the variants' settings"),
        *_tagged(f"\\fI{roff(str(paths.CACHE_DIR))}/\\fR", "verified stages and snapshots"),
        ".SH SEE ALSO",
        roff(see_also),
    ]
    return "\n".join(lines) + "\n"


def try_page() -> str:
    body = [
        ".PP",
        roff(
            "It sets the variables Ganeti sets for an instance with one disk (the disk "
            "image), runs the OS definition's create script with them as Ganeti's node "
            "daemon does, and then describes what create made: the partition table, "
            "the filesystems and the root filesystem's fstab.  Run it as root."
        ),
    ]
    return command_page(
        tryit.parser(),
        "try the gentoobootstrap OS definition on a disk image",
        body,
        "gentoobootstrap-fetch(8), ganeti-instance-gentoobootstrap(7), ganeti-os-interface(7)",
    )


def fetch_page() -> str:
    body = [
        ".PP",
        roff(
            "create downloads what it needs itself; run this ahead of time (from cron, "
            "say) so that instances are created from the cache without waiting for the "
            "mirror.  Run it as root."
        ),
    ]
    return command_page(
        prefetch._parser(),
        "fill the gentoobootstrap stage cache ahead of time",
        body,
        "gentoobootstrap-try(8), ganeti-instance-gentoobootstrap(7)",
    )


def os_page() -> str:
    """Section 7: the OS definition as Ganeti's admin configures and uses it."""
    os_name = paths.OS_NAME
    versions = ", ".join(map(str, sorted(osenv.SUPPORTED_API_VERSIONS, reverse=True)))
    lines = [
        *_header(PACKAGE, 7, "Ganeti OS definition that installs Gentoo Linux"),
        ".SH SYNOPSIS",
        f"\\fBgnt\\-instance add \\-o {os_name}+\\fR\\fIVARIANT\\fR "
        "[\\fB\\-O\\fR \\fIPARAMETER\\fR\\fB=\\fR\\fIVALUE\\fR,...] ...",
        ".SH DESCRIPTION",
        roff(
            f"{PACKAGE} is a guest OS definition for Ganeti, installed as {os_name!r} "
            f"in {paths.OS_PATH}.  Ganeti's node daemon runs its create, import, export, "
            "rename and verify scripts as root with the instance's disks and settings in "
            f"environment variables (OS API versions {versions}; see "
            "ganeti-os-interface(7)).  create partitions and formats the instance's first "
            "disk, unpacks a verified Gentoo stage3 (or a stage4) onto it and configures "
            "the guest: fstab, host name, network, serial console, root login and SSH keys."
        ),
        ".SH SETTINGS",
        roff(
            f"Every variant starts from the defaults file {paths.DEFAULTS_FILE}; the "
            f"variant's file {paths.VARIANTS_DIR}/VARIANT.conf overrides it.  Lines are "
            'KEY="value"; the files are read as data, never executed.  A bad value is an '
            "error naming the file, line, setting and what is allowed."
        ),
    ]
    for d in settings.declarations():
        default = f'"{d.raw_default}"' if d.raw_default else "empty"
        lines += _tagged(
            f"\\fB{roff(d.key)}\\fR (default: {roff(default)})",
            f"{d.help}.  Allowed: {d.kind.allowed}.",
        )
    lines += [
        ".SH VARIANTS",
        roff(
            f"Ganeti lists the variants in {paths.OS_PATH}/variants.list, one name a line; "
            f"gnt-instance add -o {os_name} without +VARIANT uses the first.  A variant must "
            f"be listed and have its file in {paths.VARIANTS_DIR} (an empty file is fine).  "
            "Variant names are letters, digits, '.', '_' and '-'."
        ),
        ".SH OS PARAMETERS",
        roff(
            "Set per instance with gnt-instance add -O NAME=VALUE; they win over the "
            "variant's settings.  Values are never logged."
        ),
    ]
    for p in parameters.PARAMETERS.values():
        lines += _tagged(
            f"\\fB{roff(p.name)}\\fR (\\fB{roff(p.variable)}\\fR)",
            f"{p.help}.  Allowed: {p.kind.allowed}.",
        )
    lines += [
        ".SH HOOKS",
        roff(
            f"After configuring the guest, create runs the executables in CUSTOMIZE_DIR "
            f"(default: {paths.HOOKS_DIR}) with run-parts(8)'s rules: only executable "
            "files whose names consist of ASCII letters, digits, '_' and '-' run, in C "
            "locale order, stdin closed.  A hook runs on the node, as root; with /proc, "
            "/sys, /dev and /dev/pts mounted in TARGET it may chroot into the guest.  It "
            "gets Ganeti's environment, every setting (upper-case, as in the files) and "
            "these variables:"
        ),
        *(
            line
            for name, text in hooks.HOOK_VARIABLES.items()
            for line in _tagged(f"\\fB{name}\\fR", text)
        ),
        ".PP",
        roff(
            "A hook that fails stops create, naming the hook and its last output lines.  "
            "The example hooks are installed there, not executable: make one executable "
            "to use it."
        ),
        ".SH FILES",
        *_tagged(f"\\fI{roff(str(paths.OS_PATH))}/\\fR", "the OS definition Ganeti runs"),
        *_tagged(f"\\fI{roff(str(paths.DEFAULTS_FILE))}\\fR", "the defaults file"),
        *_tagged(f"\\fI{roff(str(paths.VARIANTS_DIR))}/\\fR\\fIVARIANT\\fR.conf", "variants"),
        *_tagged(f"\\fI{roff(str(paths.HOOKS_DIR))}/\\fR", "customization hooks"),
        *_tagged(f"\\fI{roff(str(paths.CACHE_DIR))}/\\fR", "verified stages and snapshots"),
        ".SH SEE ALSO",
        roff("gentoobootstrap-try(8), gentoobootstrap-fetch(8), ganeti-os-interface(7), ")
        + roff("gnt-os(8), gnt-instance(8), catalyst(1)"),
    ]
    return "\n".join(lines) + "\n"


#: The pages ``make`` writes: file name -> generator.
PAGES: dict[str, Callable[[], str]] = {
    "gentoobootstrap-try.8": try_page,
    "gentoobootstrap-fetch.8": fetch_page,
    f"{PACKAGE}.7": os_page,
}
