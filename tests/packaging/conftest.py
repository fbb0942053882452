"""Session fixtures for the packaging tests: ``make dist`` tarballs, built once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pkgbuild import checkout_version, ebuild_version, make_dist, release_ebuild


@pytest.fixture(scope="session")
def dist_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist`` of the checkout at its own version."""
    return make_dist(tmp_path_factory.mktemp("dist"), checkout_version())


@pytest.fixture(scope="session")
def release_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist`` as the release procedure makes it: at the release ebuild's version."""
    version = ebuild_version(release_ebuild())
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    return make_dist(tmp_path_factory.mktemp("release"), version)
