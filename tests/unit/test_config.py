"""The defaults file and variant files: parsed as data, every mistake a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from gentoobootstrap.config import files
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import ConfigError


class Layout:
    """A defaults file, a variants directory and a variants.list under a temporary dir."""

    def __init__(self, root: Path) -> None:
        self.defaults = root / "ganeti-instance-gentoobootstrap"
        self.variants_dir = root / "variants"
        self.variants_dir.mkdir()
        self.variants_list = root / "variants.list"
        self.variants_list.write_text("default\n")
        (self.variants_dir / "default.conf").write_text("")

    def variant(self, name: str, text: str, listed: bool = True) -> Path:
        conf = self.variants_dir / f"{name}.conf"
        conf.write_text(text)
        if listed:
            with self.variants_list.open("a") as f:
                f.write(f"{name}\n")
        return conf

    def load(self, variant: str = "default") -> Settings:
        return files.load(
            variant,
            defaults_file=self.defaults,
            variants_dir=self.variants_dir,
            variants_list=self.variants_list,
        )


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


def error(layout: Layout, variant: str = "default") -> str:
    with pytest.raises(ConfigError) as e:
        layout.load(variant)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_no_files_but_the_variant_gives_the_declared_defaults(layout: Layout) -> None:
    settings = layout.load()
    assert settings.filesystem == "ext4"
    assert settings.mirror == "https://distfiles.gentoo.org"
    assert settings.verify == "signature"
    assert settings.arch  # filled in from the node


def test_variant_overrides_the_defaults_file(layout: Layout) -> None:
    layout.defaults.write_text('FILESYSTEM="xfs"\nSWAP="yes"\n')
    layout.variant("fast", 'FILESYSTEM="btrfs"\n')
    assert layout.load().filesystem == "xfs"
    fast = layout.load("fast")
    assert (fast.filesystem, fast.swap) == ("btrfs", "yes")


@pytest.mark.parametrize(
    "line",
    [
        'MIRROR="file:///srv/mirror"',
        "MIRROR='file:///srv/mirror'",
        "MIRROR=file:///srv/mirror",
        '  MIRROR = "file:///srv/mirror"  ',
        'MIRROR="file:///srv/mirror"  # a comment after the value',
    ],
)
def test_quoting_and_comments(layout: Layout, line: str) -> None:
    layout.defaults.write_text(f"# the mirror\n\n{line}\n# more\n")
    assert layout.load().mirror == "file:///srv/mirror"


def test_values_are_data_never_executed(layout: Layout, tmp_path: Path) -> None:
    witness = tmp_path / "executed"
    layout.defaults.write_text(f'KERNEL_ARGS="$(touch {witness}) `touch {witness}` a=b"\n')
    assert layout.load().kernel_args == f"$(touch {witness}) `touch {witness}` a=b"
    assert not witness.exists()


def test_unknown_key_suggests_the_near_miss_with_file_and_line(layout: Layout) -> None:
    layout.defaults.write_text('# comment\nFILESYTEM="xfs"\n')
    message = error(layout)
    assert message.startswith(f"{layout.defaults}:2: FILESYTEM: unknown setting")
    assert "did you mean FILESYSTEM?" in message


def test_unknown_key_without_a_near_miss(layout: Layout) -> None:
    layout.variant("odd", 'COMPLETELY_DIFFERENT="1"\n')
    message = error(layout, "odd")
    assert f"{layout.variants_dir / 'odd.conf'}:1: COMPLETELY_DIFFERENT: unknown setting" in message
    assert "did you mean" not in message


def test_shell_export_is_an_unknown_key_pointing_at_the_setting(layout: Layout) -> None:
    layout.defaults.write_text('export SWAP="yes"\n')
    assert "did you mean SWAP?" in error(layout)


def test_bad_value_names_the_allowed_values(layout: Layout) -> None:
    layout.defaults.write_text('SWAP="yes"\nFILESYSTEM="ntfs"\n')
    message = error(layout)
    assert message.startswith(f"{layout.defaults}:2: FILESYSTEM: bad value 'ntfs'")
    assert "allowed values: ext2, ext3, ext4, xfs, btrfs" in message


@pytest.mark.parametrize(
    ("line", "allowed"),
    [
        ('VERIFY="maybe"', "signature, checksum, none"),
        ('PARTITION_STYLE="bsd"', "msdos, gpt, none"),
        ('SWAP="sometimes"', "yes, file, no"),
        ('BOOT_SIZE="1G"', "a whole number of MiB"),
        # int() would take these: digits of another script, and blanks around them.
        ('BOOT_SIZE="\uff11\uff12"', "a whole number of MiB"),
        ('CLEAN_CACHE=" 7"', "a whole number of days"),
        ('SWAP_SIZE="-1"', "a whole number of MiB or empty"),
        ('MIRROR="ftp://mirror"', "http://..., https://..., file://..."),
        ('CACHE_DIR="relative/dir"', "an absolute path"),
        ('SNAPSHOT="yesterday"', "empty, latest or YYYYMMDD"),
        ('BOOT_FIRMWARE="efi"', "allowed values: empty, bios, uefi, both"),
    ],
)
def test_bad_values(layout: Layout, line: str, allowed: str) -> None:
    layout.defaults.write_text(line + "\n")
    message = error(layout)
    assert f"{layout.defaults}:1: {line.split('=')[0]}: bad value" in message
    assert allowed in message


def test_sections_are_refused_with_their_line(layout: Layout) -> None:
    layout.defaults.write_text('SWAP="no"\n[extra]\nSWAP="yes"\n')
    message = error(layout)
    assert message.startswith(f"{layout.defaults}:2: [extra]: sections are not supported")


def test_a_line_that_is_not_a_setting(layout: Layout) -> None:
    layout.defaults.write_text('SWAP="no"\nthis is not a setting\n')
    message = error(layout)
    assert message.startswith(f"{layout.defaults}:2: not a KEY=")
    assert "this is not a setting" in message


def test_unterminated_quote(layout: Layout) -> None:
    layout.defaults.write_text('SWAP="yes\n')
    assert error(layout).startswith(f"{layout.defaults}:1: ")


def test_a_key_set_twice(layout: Layout) -> None:
    layout.defaults.write_text('SWAP="yes"\nBOOT_SIZE="64"\nSWAP="no"\n')
    assert error(layout) == f"{layout.defaults}:3: SWAP: set twice (first on line 1)"


def test_variant_not_listed(layout: Layout) -> None:
    layout.variant("secret", 'SWAP="yes"\n', listed=False)
    message = error(layout, "secret")
    assert "variant 'secret' is not listed (listed: default)" in message
    assert str(layout.variants_list) in message


def test_variant_listed_without_a_conf_file(layout: Layout) -> None:
    layout.variants_list.write_text("default\n# a comment\n\nghost\n")
    message = error(layout, "ghost")
    assert "variant 'ghost' is listed" in message
    assert "has no settings file" in message
    assert str(layout.variants_dir / "ghost.conf") in message


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "..", "-x", "a b", "x\n"])
def test_variant_names_that_are_not_plain_names_are_refused(layout: Layout, name: str) -> None:
    layout.variants_list.write_text(f"default\n{name}\n")
    assert "bad variant name" in error(layout, name)


def test_parameters_override_settings() -> None:
    settings = files.apply_parameters(
        Settings(), {"filesystem": "xfs", "ssh_key": "ssh-ed25519 AAAA"}
    )
    assert settings.filesystem == "xfs"
    assert files.apply_parameters(settings, {}) is settings


def test_node_arch_maps_machine_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files.platform, "machine", lambda: "aarch64")
    assert files.node_arch() == "arm64"
    monkeypatch.setattr(files.platform, "machine", lambda: "pdp11")
    with pytest.raises(ConfigError, match="ARCH: cannot map"):
        files.node_arch()


def test_explicit_arch_is_kept(layout: Layout) -> None:
    layout.defaults.write_text('ARCH="riscv"\n')
    assert layout.load().arch == "riscv"
