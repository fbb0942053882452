"""The real-Ganeti suite: one throw-away cluster per session, checked clean after every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lab import Lab, LabUnavailable, cluster, skip_reason

from support import mirror, stage
from support.install import InstalledOS, install


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


@pytest.fixture(scope="session")
def test_stage(tmp_path_factory: pytest.TempPathFactory) -> stage.Stage:
    return stage.build(tmp_path_factory.mktemp("stage"))


@pytest.fixture(scope="session")
def gentoobootstrap(
    ganeti_lab: Lab,
    source_copy: Path,
    test_stage: stage.Stage,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InstalledOS]:
    """Our OS, installed from this checkout into a prefix of its own, visible to Ganeti.

    Variants: ``default`` downloads the test stage as a stage3 from a signed
    ``file://`` mirror (127.0.0.1 inside the lab's namespace is not ours) and
    verifies it; ``lab2`` installs it as a local STAGE4_FILE and lays the disk out
    differently (gpt, /boot, swap, ext3); ``hostile`` downloads a well-signed stage3
    with a member outside the target; ``broken`` has a hook that fails, so its create
    fails half way (disk partitioned, stage unpacked, guest configured).
    """
    workdir = tmp_path_factory.mktemp("gentoobootstrap")
    installed = install(workdir, source_copy)
    hostile = mirror.make_tarball(
        workdir / "hostile-stage.tar.xz",
        {"etc/gentoo-release": b"Gentoo Base System release 2.17\n", "../outside": b"x\n"},
    )
    with mirror.signing_key() as key:
        good = mirror.build_mirror(workdir / "mirror", test_stage.tarball, key)
        bad = mirror.build_mirror(workdir / "hostile-mirror", hostile, key)
        keyring = str(key.export(workdir / "keys.asc"))
    installed.add_variant(
        "default", {"MIRROR": good.root.as_uri(), "KEYRING": keyring, "ARCH": "amd64"}
    )
    installed.add_variant(
        "hostile",
        {
            "MIRROR": bad.root.as_uri(),
            "KEYRING": keyring,
            "ARCH": "amd64",
            "CACHE_DIR": str(workdir / "hostile-cache"),
        },
    )
    installed.add_variant(
        "lab2",
        {
            "STAGE4_FILE": str(test_stage.tarball),
            "VERIFY": "none",
            "PARTITION_STYLE": "gpt",
            "BOOT_SIZE": "64",
            "SWAP": "yes",
            "SWAP_SIZE": "32",
            "FILESYSTEM": "ext3",
        },
    )
    failing_hooks = workdir / "failing-hooks"
    failing_hooks.mkdir()
    hook = failing_hooks / "50-fail"
    hook.write_text("#!/bin/sh\necho 'this hook fails on purpose' >&2\nexit 3\n")
    hook.chmod(0o755)
    installed.add_variant(
        "broken",
        {
            "STAGE4_FILE": str(test_stage.tarball),
            "VERIFY": "none",
            "CUSTOMIZE_DIR": str(failing_hooks),
        },
    )
    with ganeti_lab.os_definition("gentoobootstrap", installed.os_dir):
        yield installed
