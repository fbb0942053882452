"""A real OS-script run works in a mount namespace of its own: its mounts never appear in
the node's namespace, so nothing else can pin them and a SIGKILL cannot leak them.  The
filesystems create makes are mounted nosuid,nodev."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import ganeti_environ, leaks, stage
from support.install import InstalledOS

pytestmark = pytest.mark.root

PROBE = """#!/bin/sh
# Where is this hook's mount namespace, and does it see TARGET mounted?
readlink /proc/self/ns/mnt > "$OUT/ns"
grep -c " $TARGET " /proc/self/mounts > "$OUT/target-mounts"
grep " $TARGET " /proc/self/mountinfo > "$OUT/target-mountinfo"
"""


def test_create_mounts_in_a_private_namespace(
    installed_os: InstalledOS, no_leaks: Path, stages: dict[tuple[str, str], stage.Stage]
) -> None:
    hooks, out = no_leaks / "hooks", no_leaks / "out"
    hooks.mkdir()
    out.mkdir()
    (hooks / "10-probe").write_text(PROBE)
    (hooks / "10-probe").chmod(0o755)
    image = no_leaks / "disk.img"
    with open(image, "wb") as f:
        f.truncate(320 << 20)
    installed_os.add_variant(
        "isolated",
        {
            "STAGE4_FILE": str(stages["openrc", "zstd"].tarball),
            "VERIFY": "none",
            "CUSTOMIZE_DIR": str(hooks),
        },
    )
    environ = ganeti_environ(image, OS_VARIANT="isolated", OUT=str(out), TMPDIR=str(no_leaks))

    result = installed_os.run("create", environ)

    assert result.returncode == 0, result.stderr
    assert (out / "target-mounts").read_text().strip() == "1"  # the hook saw TARGET mounted
    # The new filesystem: no setuid programs, no devices; its programs run (hooks chroot).
    options = set((out / "target-mountinfo").read_text().split()[5].split(","))
    assert {"rw", "nosuid", "nodev"} <= options and "noexec" not in options, options
    assert (out / "ns").read_text().strip() != os.readlink("/proc/self/ns/mnt")
    assert leaks(no_leaks) == []
