"""Read the defaults file and the variant file into :class:`~.settings.Settings`.

The files hold shell-style ``KEY="value"`` lines.  They are parsed as data with
configobj — never sourced or executed — and every key and value is validated
against its declaration in :mod:`gentoobootstrap.config.settings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import configobj

from gentoobootstrap import paths
from gentoobootstrap.config.settings import DECLARATIONS, Settings
from gentoobootstrap.errors import ConfigError

#: ``uname -m`` → Gentoo's arch name.
GENTOO_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "ppc64le": "ppc64",
    "ppc64": "ppc64",
    "riscv64": "riscv",
    "armv7l": "arm",
    "s390x": "s390",
    "loongarch64": "loong",
}

_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def node_arch() -> str:
    machine = platform.machine()
    try:
        return GENTOO_ARCH[machine]
    except KeyError:
        raise ConfigError(
            f"cannot map the node's machine type {machine!r} to a Gentoo arch", key="ARCH"
        ) from None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _line_of(lines: list[str], key: str) -> Optional[int]:
    pattern = re.compile(rf"\s*{re.escape(key)}\s*=")
    for number, line in enumerate(lines, 1):
        if pattern.match(line):
            return number
    return None


def read_file(path: Path) -> dict[str, tuple[str, Optional[int]]]:
    """The raw ``KEY -> (value, line)`` pairs of one settings file, keys checked."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=path) from None
    try:
        parsed = configobj.ConfigObj(
            lines, list_values=False, interpolation=False, raise_errors=True
        )
    except configobj.DuplicateError as e:
        key = str(getattr(e, "line", "")).split("=")[0].strip()
        first = _line_of(lines, key)
        raise ConfigError(
            f"set twice (first on line {first})",
            path=path,
            line=getattr(e, "line_number", None),
            key=key,
        ) from None
    except configobj.ConfigObjError as e:
        raise ConfigError(
            f'not a KEY="value" line: {getattr(e, "line", "").strip()!r}',
            path=path,
            line=getattr(e, "line_number", None),
        ) from None
    values: dict[str, tuple[str, Optional[int]]] = {}
    for key in parsed.sections:
        header = re.compile(rf"\s*\[+\s*{re.escape(key)}\s*\]+")
        line = next((n for n, text in enumerate(lines, 1) if header.match(text)), None)
        raise ConfigError(
            'sections are not supported; write KEY="value" lines',
            path=path,
            line=line,
            key=f"[{key}]",
        )
    for key, value in parsed.items():
        line = _line_of(lines, key)
        if key not in DECLARATIONS:
            close = difflib.get_close_matches(
                key.upper().removeprefix("EXPORT "), DECLARATIONS, n=1
            )
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown setting{hint}", path=path, line=line, key=key)
        values[key] = (_unquote(value), line)
    return values


def parse(
    raw: Mapping[str, tuple[str, Optional[int]]],
    path: Optional[Path] = None,
    base: Optional[Settings] = None,
) -> Settings:
    """Settings from raw values, over ``base`` (the built-in defaults when None)."""
    changes: dict[str, Any] = {}
    for key, (value, line) in raw.items():
        declaration = DECLARATIONS[key]
        try:
            changes[declaration.field] = declaration.kind.parse(value)
        except ValueError as e:
            raise ConfigError(f"bad value {value!r}; {e}", path=path, line=line, key=key) from None
    return dataclasses.replace(base or Settings(), **changes)


def listed_variants(variants_list: Optional[Path] = None) -> list[str]:
    """The variants ``variants.list`` names (without one: ``default`` alone)."""
    variants_list = variants_list or paths.OS_PATH / "variants.list"
    try:
        lines = variants_list.read_text().splitlines()
    except FileNotFoundError:
        return ["default"]
    return [name for name in (line.strip() for line in lines) if name and name[0] != "#"]


def check_variant(variant: str, variants_list: Optional[Path] = None) -> None:
    """The variant must be a plain name listed in variants.list."""
    variants_list = variants_list or paths.OS_PATH / "variants.list"
    if not _VARIANT_NAME.fullmatch(variant) or variant in (".", ".."):
        raise ConfigError(
            f"bad variant name {variant!r}: allowed are letters, digits, '.', '_' and '-'",
            key="OS_VARIANT",
        )
    listed = listed_variants(variants_list)
    if variant not in listed:
        raise ConfigError(
            f"variant {variant!r} is not listed (listed: {', '.join(listed) or 'none'})",
            path=variants_list,
            key="OS_VARIANT",
        )


def load(
    variant: str,
    *,
    defaults_file: Optional[Path] = None,
    variants_dir: Optional[Path] = None,
    variants_list: Optional[Path] = None,
) -> Settings:
    """The settings of ``variant``: the defaults file (optional), then ``variants/VARIANT.conf``.

    The paths default to the configured ones, looked up at call time (tests patch them).
    """
    defaults_file = defaults_file or paths.DEFAULTS_FILE
    variants_dir = variants_dir or paths.VARIANTS_DIR
    variants_list = variants_list or paths.OS_PATH / "variants.list"
    check_variant(variant, variants_list)
    settings = Settings()
    if defaults_file.exists():
        settings = parse(read_file(defaults_file), defaults_file, settings)
    variant_file = variants_dir / f"{variant}.conf"
    if not variant_file.exists():
        raise ConfigError(
            f"variant {variant!r} is listed in {variants_list} but has no settings file",
            path=variant_file,
        )
    settings = parse(read_file(variant_file), variant_file, settings)
    if not settings.arch:
        settings = dataclasses.replace(settings, arch=node_arch())
    return settings


#: OS parameters that override a setting of the same meaning.
_PARAMETER_SETTINGS = ("filesystem", "network", "root_password", "timezone")


def apply_parameters(settings: Settings, params: Mapping[str, object]) -> Settings:
    """The settings with the instance's OS parameters (``-O name=value``) over them."""
    changes: dict[str, Any] = {n: params[n] for n in _PARAMETER_SETTINGS if n in params}
    return dataclasses.replace(settings, **changes) if changes else settings
