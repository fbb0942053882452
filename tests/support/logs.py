"""An autouse fixture for modules that assert on log records: ``from support.logs import *``."""

from __future__ import annotations

import logging

import pytest

__all__ = ["plain_logging"]


@pytest.fixture(autouse=True)
def plain_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo what an earlier cli.main did to the library's logger, so caplog sees the records."""
    logger = logging.getLogger("gentoobootstrap")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "level", logging.NOTSET)
