"""The real-Ganeti suite: one throw-away cluster per session, checked clean after every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lab import Lab, LabUnavailable, cluster, skip_reason


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = skip_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("ganeti") and Path(__file__).parent in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def ganeti_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("ganeti-lab")
    try:
        with cluster(workdir) as running:
            yield running
    except LabUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def lab(ganeti_lab: Lab) -> Iterator[Lab]:
    """The session's cluster; afterwards nothing of the test's may be left attached or mounted."""
    yield ganeti_lab
    left = ganeti_lab.leaks()
    if left:
        ganeti_lab.release_leaks()
    ganeti_lab.remove_instances()
    ganeti_lab.test_stack.close()
    assert not left, f"left behind: {left}"
