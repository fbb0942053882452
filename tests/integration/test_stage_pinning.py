"""A local STAGE4_FILE is pinned: replacing it after it was verified changes nothing installed.

create's own steps run in-process, and the file is swapped for an unsigned one at
exactly the moment the log says its digests match.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gentoobootstrap.config import osenv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.scripts import create, install
from support import ganeti_environ, mounted_context, stage
from support.mirror import SigningKey, build_mirror, signing_key

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def key() -> Iterator[SigningKey]:
    with signing_key() as k:
        yield k


class SwapOnLine(logging.Handler):
    """Replaces ``path`` with ``other``'s bytes when a record containing ``line`` is logged."""

    def __init__(self, line: str, path: Path, other: Path) -> None:
        super().__init__()
        self.line, self.path, self.other = line, path, other
        self.swapped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.line in record.getMessage() and not self.swapped:
            swap = self.path.with_name(".swap")
            swap.write_bytes(self.other.read_bytes())
            swap.replace(self.path)  # what an attacker with the directory can do
            self.swapped += 1


def test_swapping_the_local_stage4_after_verification_installs_the_verified_one(
    tmp_path: Path, key: SigningKey, stages: dict[tuple[str, str], stage.Stage]
) -> None:
    good = stages["openrc", "xz"]
    evil_tree = tmp_path / "evil-tree"
    (evil_tree / "etc").mkdir(parents=True)
    (evil_tree / "etc" / "evil").write_text("installed from an unsigned stage\n")
    evil = stage.pack(evil_tree, tmp_path / "evil.tar.zst", "zstd")
    # The stage as an admin keeps it: a clear-signed .DIGESTS beside it, no .asc.
    layout = build_mirror(tmp_path / "builds", good.tarball, key)
    layout.stage.with_name(layout.stage.name + ".asc").unlink()
    settings = dataclasses.replace(
        Settings(),
        stage4_file=str(layout.stage),
        keyring=key.export(tmp_path / "keys.asc"),
        cache_dir=tmp_path / "cache",
    )
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    env = osenv.parse("create", ganeti_environ(image))
    target = tmp_path / "target"
    target.mkdir()
    swapper = SwapOnLine("digests match", layout.stage, evil)
    logger = logging.getLogger("gentoobootstrap")
    logger.addHandler(swapper)
    logger.setLevel(logging.INFO)  # restored by the library_logger fixture
    try:
        with install.session(env, settings, image) as start:
            prepared = install.step(create.obtain_stage, start)
            prepared = install.step(create.obtain_snapshot, prepared)
            install.step(create.check_stage, prepared)
            mounted = mounted_context(env, settings, target, prepared.job)
            install.step(create.unpack_stage, mounted)
    finally:
        logger.removeHandler(swapper)
    assert swapper.swapped == 1 and layout.stage.read_bytes() == evil.read_bytes()
    assert not (target / "etc" / "evil").exists()
    assert stage.compare(good.tree, target) == []
