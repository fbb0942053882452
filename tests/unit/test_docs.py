"""The files and README sections generated from the declarations are current and valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gentoobootstrap.config import files, parameters, settings
from gentoobootstrap.config.settings import DECLARATIONS, Settings
from gentoobootstrap.docs import generate
from support import REPO

README = REPO / "README.md"
EXAMPLES = REPO / "examples"

#: Setting names admins' variant files and the README already use: renaming one breaks them.
FIXED_NAMES = [
    *("MIRROR", "ARCH", "STAGE3_FLAVOR", "STAGE4_FILE", "CATALYST_SPEC", "PORTAGE_CONFDIR"),
    *("SNAPSHOT", "KEYRING", "VERIFY", "PROXY", "CACHE_DIR", "CLEAN_CACHE", "CUSTOMIZE_DIR"),
    *("PARTITION_STYLE", "BOOT_SIZE", "SWAP", "SWAP_SIZE", "FILESYSTEM", "KERNEL_ARGS", "DEBUG"),
]


def test_readme_reference_tables_are_current() -> None:
    found = generate.readme_sections(README.read_text())
    assert set(found) == set(generate.README_SECTIONS), "README lacks a marked section"
    for name, make in generate.README_SECTIONS.items():
        assert found[name] == make() + "\n", f"run 'make readme': {name} is out of date"


def test_readme_update_is_idempotent_and_complete() -> None:
    text = README.read_text()
    assert generate.update_readme(text) == text
    stale = text.replace("| `SWAP` |", "| `SWAPPY` |")
    assert generate.update_readme(stale) == text
    with pytest.raises(ValueError, match="settings-reference"):
        generate.update_readme("# no markers\n")


def test_readme_has_the_sections_other_work_fills() -> None:
    headings = {line for line in README.read_text().splitlines() if line.startswith("## ")}
    for heading in (
        "## Disk layouts",
        "## Stages, verification and the cache",
        "## Guest configuration",
        "## Customization hooks",
        "## Export, import and rename",
        "## Testing",
        "## Variants",
        "## OS parameters",
        "## Configuration",
        "## Instance notes",
    ):
        assert heading in headings


def test_readme_table_shows_every_setting_with_symbolic_paths() -> None:
    table = generate.settings_table()
    for key in DECLARATIONS:
        assert f"| `{key}` |" in table
    assert "`$localstatedir/cache/ganeti-instance-gentoobootstrap`" in table
    assert "`$sysconfdir/ganeti/instance-gentoobootstrap/hooks`" in table
    for row in table.splitlines()[2:]:
        assert row.replace("\\|", "").count("|") == 5, f"a cell splits the row: {row}"


def test_the_fixed_setting_names_are_declared() -> None:
    assert set(FIXED_NAMES) <= set(DECLARATIONS)


def test_every_setting_has_help_and_a_valid_default() -> None:
    for d in DECLARATIONS.values():
        assert d.key == d.key.upper() and d.help and "\n" not in d.help
        d.kind.parse(d.raw_default)  # the documented default is an allowed value


def test_defaults_file_documents_every_setting(tmp_path: Path) -> None:
    text = generate.FILES["defaults"]()
    assert text == settings.defaults_file_text()
    defaults = tmp_path / "defaults"
    defaults.write_text(text)
    assert files.read_file(defaults) == {}  # all commented out
    for key in DECLARATIONS:
        assert f'\n#{key}="' in text


def test_uncommented_defaults_file_gives_the_built_in_defaults(tmp_path: Path) -> None:
    lines = generate.FILES["defaults"]().splitlines()
    assignments = [line[1:] for line in lines if re.match(r'#[A-Z0-9_]+="', line)]
    defaults = tmp_path / "defaults"
    defaults.write_text("\n".join(assignments) + "\n")
    assert files.parse(files.read_file(defaults), defaults) == Settings()


def test_ganeti_api_version_is_one_integer_a_line() -> None:
    assert generate.FILES["ganeti_api_version"]() == "20\n15\n10\n"


def test_parameters_list_and_variants_list() -> None:
    assert generate.FILES["parameters.list"]() == parameters.list_text()
    assert generate.FILES["variants.list"]().splitlines() == ["default"]


@pytest.mark.parametrize(
    "conf", sorted((EXAMPLES / "variants").glob("*.conf")), ids=lambda p: p.name
)
def test_example_variants_are_valid(conf: Path) -> None:
    files.parse(files.read_file(conf), conf)


def test_the_default_variant_is_shipped() -> None:
    assert (EXAMPLES / "variants" / "default.conf").is_file()


def test_docs_main(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert generate.main(["ganeti_api_version"]) == 0
    assert capsys.readouterr().out == "20\n15\n10\n"
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text().replace("| `SWAP` |", "| `OLD` |"))
    assert generate.main(["readme-update", str(readme)]) == 0
    assert readme.read_text() == README.read_text()
    assert generate.main(["nonsense"]) == 2
    assert "usage:" in capsys.readouterr().err
