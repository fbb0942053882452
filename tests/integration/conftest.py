"""Fixtures of the integration tests."""

from __future__ import annotations

import pytest

from support import stage


@pytest.fixture(scope="session")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], stage.Stage]:
    """Test stages by (flavour, compression), built once."""
    built: dict[tuple[str, str], stage.Stage] = {}
    base = tmp_path_factory.mktemp("stages")
    for flavour, compression in [("openrc", c) for c in stage.COMPRESSIONS] + [("systemd", "zstd")]:
        work = base / f"{flavour}-{compression}"
        work.mkdir()
        built[flavour, compression] = stage.build(work, flavour, compression)
    return built
