"""Each filesystem and each compression is declared once: every other module derives from the
table, so a new entry needs no edit anywhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gentoobootstrap.config import parameters, settings
from gentoobootstrap.disk import filesystems, stream
from gentoobootstrap.stages import unpack
from support import library_modules

MODULES = library_modules()
#: The tables, and the one place each is declared.
TABLES = {
    "disk.filesystems": set(filesystems.FILESYSTEMS) - {"swap"},  # "swap" is a role as well
    "stages.unpack": set(unpack.COMPRESSIONS),
}


#: Names that may stand elsewhere: a choice among the entries, or a tool named like its entry.
CHOICES = {
    "disk.layout": {"ext4", "vfat"},  # the filesystems of a separate /boot and of the ESP
    "config.settings": {"ext4"},  # FILESYSTEM's default
    "runner": set(unpack.COMPRESSIONS),  # the decompressors' packages
}


def _literals(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


@pytest.mark.parametrize("module", MODULES)
def test_no_other_module_names_an_entry_of_a_table(module: str) -> None:
    for home, names in TABLES.items():
        if module != home:
            found = _literals(MODULES[module]) & names - CHOICES.get(module, set())
            assert not found, f"{module} names {found} of {home}'s table"


def test_the_filesystem_setting_and_parameter_allow_the_tables_root_filesystems() -> None:
    declared = settings.DECLARATIONS["FILESYSTEM"]
    for name in filesystems.ROOT_FILESYSTEMS:
        assert declared.kind.parse(name) == name
    with pytest.raises(ValueError):
        declared.kind.parse("swap")
    help_text = str(parameters.PARAMETERS)
    assert ", ".join(filesystems.ROOT_FILESYSTEMS) in help_text


def test_every_root_filesystem_has_what_create_and_the_read_only_mounts_need() -> None:
    for name in filesystems.ROOT_FILESYSTEMS:
        fs = filesystems.FILESYSTEMS[name]
        assert fs.mkfs and fs.label_max and fs.min_root_mib > 0 and fs.readonly_options


@pytest.mark.parametrize("kind", sorted(unpack.COMPRESSIONS))
def test_a_compressed_import_stream_is_told_by_the_same_magic(kind: str) -> None:
    block = unpack.COMPRESSIONS[kind].magic.ljust(stream.BLOCK, b"\0")
    assert unpack.compression_of(block) == kind
