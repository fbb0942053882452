"""The files and README sections generated from the declarations.

``make`` writes the OS directory's ``ganeti_api_version``, ``parameters.list``
and ``variants.list``, the defaults file and the manual pages
(:mod:`gentoobootstrap.docs.manpages`) with ``python -m gentoobootstrap.docs.generate NAME``;
the README's reference tables sit between ``<!-- BEGIN name -->`` and
``<!-- END name -->`` markers and are rewritten by ``readme-update`` (a unit
test checks they are current).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from gentoobootstrap import paths
from gentoobootstrap.config import osenv, parameters, settings
from gentoobootstrap.docs import manpages

#: Variants made by ``make install``; admins add theirs to variants.list.
VARIANTS = ("default",)


def ganeti_api_version_text() -> str:
    """One integer a line, newest first, nothing else (Ganeti ``int()``s every line)."""
    return "".join(f"{v}\n" for v in sorted(osenv.SUPPORTED_API_VERSIONS, reverse=True))


def variants_list_text() -> str:
    return "".join(f"{v}\n" for v in VARIANTS)


def _symbolic(value: str) -> str:
    """A configured path as the README documents it: ``$sysconfdir/...``, ``$localstatedir/...``."""
    for name, directory in (
        ("$sysconfdir", paths.SYSCONFDIR),
        ("$localstatedir", paths.LOCALSTATEDIR),
    ):
        if value.startswith(f"{directory}/"):
            return name + value[len(str(directory)) :]
    return value


def settings_table() -> str:
    """The README's configuration reference: :func:`settings.reference_table` with
    configured paths written symbolically, so the README holds for every ``configure``."""
    rows = []
    for row in settings.reference_table().splitlines():
        cells = row.split(" | ")
        if len(cells) > 1 and cells[1].startswith("`/"):
            cells[1] = f"`{_symbolic(cells[1].strip('`'))}`"
        rows.append(" | ".join(cells))
    return "\n".join(rows)


def parameters_table() -> str:
    """The README's OS parameter reference."""
    rows = ["| Parameter | Variable | Allowed | Meaning |", "|---|---|---|---|"]
    for p in parameters.PARAMETERS.values():
        cells = (f"`{p.name}`", f"`{p.variable}`", p.kind.allowed, p.help)
        rows.append("| " + " | ".join(settings.markdown_cell(c) for c in cells) + " |")
    return "\n".join(rows)


#: README sections kept in sync: marker name -> generator.
README_SECTIONS: dict[str, Callable[[], str]] = {
    "settings-reference": settings_table,
    "parameters-reference": parameters_table,
}

#: Files ``make`` generates: name -> generator.
FILES: dict[str, Callable[[], str]] = {
    "ganeti_api_version": ganeti_api_version_text,
    "parameters.list": parameters.list_text,
    "variants.list": variants_list_text,
    "defaults": settings.defaults_file_text,
    **manpages.PAGES,
}


def _section(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- BEGIN {re.escape(name)} -->\n)(.*?)(<!-- END {re.escape(name)} -->)", re.DOTALL
    )


def readme_sections(text: str) -> dict[str, str]:
    """The generated sections as they stand in a README (``name -> content``)."""
    found = {}
    for name in README_SECTIONS:
        match = _section(name).search(text)
        if match:
            found[name] = match.group(2)
    return found


def update_readme(text: str) -> str:
    """``text`` with every marked section replaced by its current content."""
    for name, generate in README_SECTIONS.items():
        match = _section(name).search(text)
        if not match:
            raise ValueError(f"README has no <!-- BEGIN {name} --> ... <!-- END {name} --> section")
        text = text[: match.start(2)] + generate() + "\n" + text[match.end(2) :]
    return text


def main(argv: Sequence[str]) -> int:
    """``docs NAME`` prints a generated file; ``docs readme-update README.md`` rewrites it."""
    if len(argv) == 1 and argv[0] in FILES:
        sys.stdout.write(FILES[argv[0]]())
        return 0
    if len(argv) == 2 and argv[0] == "readme-update":
        path = Path(argv[1])
        path.write_text(update_readme(path.read_text()))
        return 0
    names = " | ".join(FILES)
    print(f"usage: docs {{{names}}} | docs readme-update README.md", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
