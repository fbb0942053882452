"""Shared pytest set-up: root-only tests skip with a reason; leak checks."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import leaks

# installed_os, source_copy: the OS definition installed into a temporary prefix.
pytest_plugins = ["support.install"]


def _root_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (real loop devices, mkfs and mounts)"
    if not Path("/dev/loop-control").exists():
        return "needs loop devices (/dev/loop-control is missing)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _root_skip_reason()
    if reason is None:
        return
    for item in items:
        if any(item.iter_markers(name) for name in ("root", "ganeti", "boot")):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def library_logger() -> Iterator[None]:
    """Undo what cli.main's log.setup() does to the library's logger (a handler on the
    test's captured stderr, no propagation), so caplog works in every later test."""
    logger = logging.getLogger("gentoobootstrap")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def no_leaks(tmp_path: Path) -> Iterator[Path]:
    """Fail the test if it leaves a loop device or mount of anything under ``tmp_path``."""
    yield tmp_path
    left = leaks(tmp_path)
    assert not left, f"left behind: {left}"
