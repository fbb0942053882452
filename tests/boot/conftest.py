"""Boot suite set-up: skip without qemu, build (once, cached) the kernel kit and test stage.

Boot times are recorded per test (``record_property("boot_seconds", ...)``) and
summed up at the end of the run, also under pytest-xdist.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boot import kit, qemu


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if qemu.qemu_binary() is not None:
        return
    skip = pytest.mark.skip(reason="needs qemu-system-x86_64 (Debian: qemu-system-x86)")
    for item in items:
        if item.get_closest_marker("boot"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def node_kernel() -> kit.NodeKernel:
    """Debian's kernel and the test initrd: what ``INSTANCE_HV_kernel_path`` boots."""
    return kit.node_kernel()


@pytest.fixture(scope="session")
def stage_tarball(node_kernel: kit.NodeKernel) -> Path:
    """The Gentoo-shaped bootable test stage, for ``STAGE4_FILE``."""
    return kit.stage_tarball(node_kernel)


@pytest.fixture(scope="session")
def systemd_stage(node_kernel: kit.NodeKernel) -> Path:
    """The test stage with real systemd, shaped like Gentoo's systemd stage3."""
    return kit.systemd_stage_tarball(node_kernel)


@pytest.fixture(scope="session")
def openrc_stage(node_kernel: kit.NodeKernel) -> Path:
    """The test stage with sysvinit and Debian's OpenRC, shaped like Gentoo's OpenRC stage3."""
    return kit.openrc_stage_tarball(node_kernel)


_boot_times: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == "boot_seconds":
            _boot_times.append((report.nodeid.rpartition("::")[2], f"{value:.1f} s"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _boot_times:
        return
    terminalreporter.section("boot to login prompt")
    for name, seconds in sorted(_boot_times):
        terminalreporter.write_line(f"{seconds:>8}  {name}")
