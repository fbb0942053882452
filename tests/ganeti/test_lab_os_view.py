"""The lab's Ganeti sees the lab's OS definitions and nothing the node has installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from lab import Lab, run

pytestmark = pytest.mark.ganeti


def test_node_daemon_sees_only_the_labs_os_definitions(lab: Lab, tmp_path: Path) -> None:
    directory = tmp_path / "viewprobe"
    directory.mkdir()
    with lab.os_definition("viewprobe", directory) as found:
        first, *others = lab.os_search_path
        assert found == first / "viewprobe"
        enter = ["nsenter", "--target", lab.daemon_pid(), "--mount"]
        listed = run([*enter, "ls", "-A", str(first)]).stdout.split()
        assert "viewprobe" in listed
        assert set(listed) == {p.name for p in lab.os_root.iterdir()}
        for directory in others:
            if directory.is_dir():  # on the node: hidden from Ganeti by an empty directory
                assert run([*enter, "ls", "-A", str(directory)]).stdout == ""
