"""The harness itself: a trivial OS definition proves that Ganeti really runs OS scripts here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab import Lab

pytestmark = pytest.mark.ganeti

SCRIPT = """#!/bin/sh
# Log the environment Ganeti gives us, then mark the disk.
env | sort
printf '%s %s reinstall=%s\\n' "$OS_VARIANT" "$INSTANCE_NAME" "$INSTANCE_REINSTALL" |
    dd of="$DISK_0_PATH" conv=notrunc status=none
"""


@pytest.fixture(scope="module")
def probe_os(ganeti_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("labprobe")
    (directory / "ganeti_api_version").write_text("20\n")
    (directory / "variants.list").write_text("default\nother\n")
    (directory / "parameters.list").write_text("colour the colour of the probe\n")
    for script in ("create", "import", "export", "rename"):
        (directory / script).write_text(SCRIPT)
        (directory / script).chmod(0o755)
    verify = directory / "verify"
    verify.write_text(
        '#!/bin/sh\n[ "${OSP_COLOUR:-red}" = red ] || { echo "bad colour"; exit 1; }\n'
    )
    verify.chmod(0o755)
    with ganeti_lab.os_definition("labprobe", directory):
        yield "labprobe"


def test_cluster_runs_create_on_a_file_disk_with_a_clean_environment(
    lab: Lab, probe_os: str
) -> None:
    mark = lab.log_mark()
    lab.add_instance("probe1.ganeti.lab", f"{probe_os}+other", params={"colour": "red"})

    disk = lab.disk_path("probe1.ganeti.lab")
    assert disk.is_file()
    assert disk.read_bytes()[:40].startswith(b"other probe1.ganeti.lab reinstall=\n")
    [log] = lab.os_logs(mark, "add", "probe1.ganeti.lab")
    env = dict(line.split("=", 1) for line in log.read_text().splitlines() if "=" in line)
    assert env["DISK_0_BACKEND_TYPE"] == "file:loop"
    assert env["OS_VARIANT"] == "other"
    assert env["OSP_COLOUR"] == "red"
    assert env["PATH"] == "/sbin:/bin:/usr/sbin:/usr/bin"
    assert not [k for k in env if k.startswith(("PYTEST", "VIRTUAL_ENV", "LC_"))]


def test_cluster_adopts_a_block_device_and_reinstall_runs_create(lab: Lab, probe_os: str) -> None:
    device = lab.adoptable("probe2")
    r = lab.add_instance("probe2.ganeti.lab", f"{probe_os}+default", "blockdev", f"adopt={device}")
    assert r.returncode == 0
    assert device.read_bytes()[:8] == bytes(8), "Ganeti does not run create on adopted disks"

    lab.gnt("instance", "reinstall", "-f", "probe2.ganeti.lab")
    assert device.read_bytes()[:40].startswith(b"default probe2.ganeti.lab reinstall=1\n")


def test_verify_refuses_a_bad_parameter_before_any_disk_is_made(lab: Lab, probe_os: str) -> None:
    r = lab.add_instance(
        "probe3.ganeti.lab", f"{probe_os}+default", params={"colour": "blue"}, check=False
    )
    assert r.returncode != 0
    assert "bad colour" in r.stdout + r.stderr
    assert lab.instances() == []
    assert not (lab.storage_dir / "probe3.ganeti.lab").exists()  # where its disk would be
