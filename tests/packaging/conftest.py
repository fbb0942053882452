"""Session fixtures for the packaging tests: ``make dist`` tarballs, built once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pkgbuild import (
    checkout_version,
    copy_source,
    ebuild_version,
    make_dist,
    release_ebuild,
    tagged_source,
)


@pytest.fixture(scope="session")
def dist_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist`` of the checkout at its own version."""
    version = checkout_version()
    return make_dist(copy_source(tmp_path_factory.mktemp("dist") / "src", version), version)


@pytest.fixture(scope="session")
def release_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist`` as the release procedure makes it: tag v${PV} of the release ebuild."""
    version = ebuild_version(release_ebuild())
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    return make_dist(tagged_source(tmp_path_factory.mktemp("release") / "src", version), version)
