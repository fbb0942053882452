"""Stream format detection, the end block, the pumps, fstab rewriting, the rename logic and
import's error paths — no root, tools faked."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from gentoobootstrap import runner
from gentoobootstrap.config import osenv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.confinement import RESTORING
from gentoobootstrap.disk import fstab, layout, stream
from gentoobootstrap.errors import StreamError, ToolNotFoundError
from gentoobootstrap.guest.configure import set_hostname
from gentoobootstrap.guest.tree import GuestRoot
from gentoobootstrap.scripts import import_, install, rename
from gentoobootstrap.scripts.install import Mounted
from support import ganeti_environ, mounted_context


def pipe_with(data: bytes) -> int:
    """A read fd that yields ``data`` then EOF (written by a thread: data may exceed the pipe)."""
    r, w = os.pipe()

    def writer() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(data)

    threading.Thread(target=writer, daemon=True).start()
    return r


def tar_bytes(pax: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers=pax) as tar:
        info = tarfile.TarInfo("./etc/hostname")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"inst1\n"))
    return buf.getvalue()


def head_of(data: bytes) -> stream.Head:
    fd = pipe_with(data)
    try:
        return stream.read_head(fd)
    finally:
        os.close(fd)


def test_our_stream_is_told_by_its_global_header() -> None:
    data = tar_bytes({"GENTOOBOOTSTRAP.format": "1", "GENTOOBOOTSTRAP.size": "12345"})
    head = head_of(data)
    assert head.format == "gentoobootstrap" and head.size == 12345
    assert data.startswith(head.block) and len(head.block) % 512 == 0


def test_a_plain_tar_is_accepted_without_a_size() -> None:
    head = head_of(tar_bytes())
    assert head.format == "tar" and head.size is None and len(head.block) == 512
    head = head_of(tar_bytes({"comment": "someone else's"}))
    assert head.format == "tar"


@pytest.mark.parametrize("order", ["little", "big"])
def test_a_dump_stream_is_told_by_its_magic(order: str) -> None:
    block = (1).to_bytes(4, order) + b"\0" * 20 + (60012).to_bytes(4, order)  # type: ignore[arg-type]
    assert head_of(block.ljust(1024, b"\0")).format == "dump"


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"\x1f\x8b\x08" + b"\0" * 600, "gzip-compressed"),
        (b"\xfd7zXZ\x00" + b"\0" * 600, "xz-compressed"),
        (b"hello world" * 100, "neither an export of this OS"),
    ],
)
def test_unknown_streams_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(StreamError, match=message):
        head_of(data)


def test_a_newer_format_is_refused_and_a_cut_header_is_truncated() -> None:
    with pytest.raises(StreamError, match="format 2 is not supported"):
        head_of(tar_bytes({"GENTOOBOOTSTRAP.format": "2"}))
    with pytest.raises(StreamError, match="truncated"):
        head_of(tar_bytes({"GENTOOBOOTSTRAP.format": "1"})[:600])


def test_header_options_refuse_commas() -> None:
    assert stream.header_options({"format": "1", "uuids": "root:a boot:b"}) == [
        "--pax-option=globexthdr.name=GENTOOBOOTSTRAP,"
        "GENTOOBOOTSTRAP.format=1,GENTOOBOOTSTRAP.uuids=root:a boot:b"
    ]
    with pytest.raises(ValueError):
        stream.header_options({"x": "a,b"})


def test_end_block_checks() -> None:
    digest = stream.hex_checksum(stream.checksum(b"abc"))
    block = stream.end_block(3, digest)
    assert len(block) == 512
    stream.check_end(block, 3, digest)
    with pytest.raises(StreamError, match="truncated"):
        stream.check_end(b"\0" * 512, 3, digest)
    with pytest.raises(StreamError, match="says 3 bytes, 4 arrived"):
        stream.check_end(block, 4, digest)
    with pytest.raises(StreamError, match="CRC-32"):
        stream.check_end(block, 3, stream.hex_checksum(stream.checksum(b"abd")))


@pytest.mark.parametrize("size", [0, 100, 511, 512, 513, 5000, 3 * stream.CHUNK + 7])
def test_copy_in_holds_back_the_end_block(size: int, tmp_path: Path) -> None:
    payload = os.urandom(size)
    first, rest = payload[:700], payload[700:]
    end = stream.end_block(size, stream.hex_checksum(stream.checksum(payload)))
    source = pipe_with(rest + end)
    out = tmp_path / "out"
    with open(out, "wb") as sink:
        received = stream.copy_in(first, source, sink.fileno(), hold_back=512)
    os.close(source)
    assert out.read_bytes() == payload
    assert received.end == end and received.count == size
    stream.check_end(received.end, received.count, received.digest)


@pytest.mark.parametrize("size", [0, 100, 511, 512, 513, 5000, 3 * stream.CHUNK + 7])
def test_copy_in_between_pipes_holds_back_the_end_block(size: int) -> None:
    payload = os.urandom(size)
    first, rest = payload[:700], payload[700:]
    end = stream.end_block(size, stream.hex_checksum(stream.checksum(payload)))
    source = pipe_with(rest + end)
    r, w = os.pipe()
    thread, parts = drained(r)
    received = stream.copy_in(first, source, w, hold_back=512)
    os.close(w)
    thread.join()
    os.close(source)
    assert parts == [payload]
    assert received.end == end and received.count == size
    stream.check_end(received.end, received.count, received.digest)


def test_copy_in_reads_on_when_the_extractor_stops() -> None:
    payload = os.urandom(2 * stream.CHUNK)
    end = stream.end_block(len(payload), stream.hex_checksum(stream.checksum(payload)))
    source = pipe_with(payload + end)
    r, w = os.pipe()
    os.close(r)
    received = stream.copy_in(b"", source, w, hold_back=512)
    os.close(w)
    os.close(source)
    assert received.sink_closed and received.end == end
    stream.check_end(received.end, received.count, received.digest)


def test_copy_out_counts_and_hashes(tmp_path: Path) -> None:
    payload = os.urandom(2 * stream.CHUNK + 3)
    source = pipe_with(payload)
    with open(tmp_path / "out", "wb") as sink:
        count, digest = stream.copy_out(source, sink.fileno())
    os.close(source)
    assert (tmp_path / "out").read_bytes() == payload and count == len(payload)
    assert digest == stream.hex_checksum(stream.checksum(payload))


def drained(fd: int) -> tuple[threading.Thread, list[bytes]]:
    """A thread reading ``fd`` to its end into the returned list (closes ``fd``)."""
    parts: list[bytes] = []

    def reader() -> None:
        with os.fdopen(fd, "rb") as f:
            parts.append(f.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread, parts


def test_copy_out_between_pipes_duplicates_and_hashes() -> None:
    payload = os.urandom(3 * stream.CHUNK + 5)
    source = pipe_with(payload)
    r, w = os.pipe()
    thread, parts = drained(r)
    count, digest = stream.copy_out(source, w)
    os.close(w)
    thread.join()
    os.close(source)
    assert parts == [payload] and count == len(payload)
    assert digest == stream.hex_checksum(stream.checksum(payload))


def test_copy_out_to_a_closed_pipe_is_a_broken_pipe() -> None:
    source = pipe_with(b"x" * 4096)
    r, w = os.pipe()
    os.close(r)
    with pytest.raises(BrokenPipeError):
        stream.copy_out(source, w)
    os.close(w)
    os.close(source)


# --- fstab ------------------------------------------------------------------------------------

GUEST_FSTAB = """\
# /etc/fstab of a guest
UUID=old-root\t/\text4\tnoatime,errors=remount-ro\t0 1
UUID=old-boot\t/boot\text4\tnoatime\t0 2
UUID=old-swap\tnone\tswap\tsw\t0 0
/swapfile\tnone\tswap\tsw\t0 0
tmpfs\t/var/tmp/portage\ttmpfs\tsize=1G\t0 0
/dev/vdb1\t/srv\text4\tnoatime\t0 2
"""


def test_rewrite_keeps_the_guests_lines_and_options() -> None:
    new = {
        "root": fstab.entry("new-root", "/", "ext4"),
        "boot": fstab.entry("new-boot", "/boot", "ext4"),
        "swap": fstab.entry("new-swap", "none", "swap"),
    }
    text = fstab.rewrite(GUEST_FSTAB, new, {"UUID=old-swap"})
    assert text.splitlines() == [
        "# /etc/fstab of a guest",
        "UUID=new-root\t/\text4\tnoatime,errors=remount-ro\t0 1",
        "UUID=new-boot\t/boot\text4\tnoatime\t0 2",
        "UUID=new-swap\tnone\tswap\tsw\t0 0",
        "/swapfile\tnone\tswap\tsw\t0 0",
        "tmpfs\t/var/tmp/portage\ttmpfs\tsize=1G\t0 0",
        "/dev/vdb1\t/srv\text4\tnoatime\t0 2",
    ]


def test_rewrite_for_another_filesystem_and_layout() -> None:
    """xfs root, no /boot (merged into root), no swap: those lines go, others stay."""
    text = fstab.rewrite(GUEST_FSTAB, {"root": fstab.entry("new-root", "/", "xfs")})
    lines = text.splitlines()
    assert lines[1] == "UUID=new-root\t/\txfs\tnoatime\t0 1"
    assert not any("/boot" in line or "old-swap" in line for line in lines)
    assert (
        "/swapfile\tnone\tswap\tsw\t0 0" in lines and "/dev/vdb1\t/srv\text4\tnoatime\t0 2" in lines
    )


def test_rewrite_appends_roles_the_old_disk_lacked() -> None:
    text = fstab.rewrite(
        "/dev/vda1 / ext4 defaults 0 1\n",
        {"root": fstab.entry("r", "/", "ext4"), "swap": fstab.entry("s", "none", "swap")},
    )
    assert text.splitlines() == ["UUID=r\t/\text4\tdefaults\t0 1", "UUID=s\tnone\tswap\tsw\t0 0"]


def test_rewrite_gives_the_esp_its_new_uuid_or_drops_it() -> None:
    guest = GUEST_FSTAB + "UUID=OLD-E\t/efi\tvfat\tumask=0077,nofail\t0 0\n"
    root = fstab.entry("new-root", "/", "ext4")
    text = fstab.rewrite(guest, {"root": root, "esp": fstab.entry("NEW-E", "/efi", "vfat")})
    assert text.splitlines()[-1] == "UUID=NEW-E\t/efi\tvfat\tumask=0077,nofail\t0 0"
    assert "/efi" not in fstab.rewrite(guest, {"root": root})  # imported onto msdos: no ESP
    appended = fstab.rewrite(GUEST_FSTAB, {"root": root, "esp": fstab.entry("E", "/efi", "vfat")})
    assert appended.splitlines()[-1] == "UUID=E\t/efi\tvfat\tumask=0077,nofail\t0 0"


def test_lookup_and_sources() -> None:
    entry = fstab.lookup(GUEST_FSTAB, "/boot/")
    assert entry is not None and entry.source == "UUID=old-boot"
    assert fstab.lookup("#UUID=x /boot ext4 defaults 0 2\n", "/boot") is None
    assert fstab.normal_source("/dev/disk/by-uuid/abc") == "UUID=abc"
    assert layout.first_disk_partition("/dev/vda2") == 2
    assert layout.first_disk_partition("/dev/vdb2") is None


# --- rename -----------------------------------------------------------------------------------


def guest(tmp_path: Path, name: str) -> GuestRoot:
    (tmp_path / "etc/conf.d").mkdir(parents=True)
    (tmp_path / "etc/hosts").write_text("127.0.0.1\tlocalhost\n10.1.1.1\tother.example.com\n")
    root = GuestRoot(tmp_path)
    set_hostname(root, name)
    return root


def test_rename_guest(tmp_path: Path) -> None:
    root = guest(tmp_path, "old.example.com")
    assert rename.rename_guest(root, "old.example.com", "new.example.org")
    assert root.read_text("/etc/hostname") == "new\n"
    assert 'hostname="new"' in (root.read_text("/etc/conf.d/hostname") or "")
    hosts = root.read_text("/etc/hosts") or ""
    assert "127.0.1.1\tnew.example.org new" in hosts and "old" not in hosts
    assert "10.1.1.1\tother.example.com" in hosts


def test_rename_leaves_a_foreign_name_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cli tests elsewhere stop the library's logger from propagating: listen to it directly.
    monkeypatch.setattr(logging.getLogger("gentoobootstrap"), "handlers", [caplog.handler])
    root = guest(tmp_path, "mine.example.com")
    before = root.read_text("/etc/hosts")
    assert not rename.rename_guest(root, "old.example.com", "new.example.org")
    assert "neither the old name old.example.com nor the new name new.example.org" in caplog.text
    assert root.read_text("/etc/hosts") == before and root.read_text("/etc/hostname") == "mine\n"
    assert not rename.rename_guest(guest(tmp_path / "b", "new"), "old", "new")


def test_rename_to_the_same_name_touches_nothing(fp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = osenv.parse(
        "rename",
        ganeti_environ(
            tmp_path / "missing.img", "same.example.com", OLD_INSTANCE_NAME="same.example.com"
        ),
    )
    rename.main(env, Settings(), [])
    assert len(fp.calls) == 0


# --- import error paths -----------------------------------------------------------------------


def test_a_dump_stream_needs_restore(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runner, "tool_path", lambda: str(tmp_path))  # nothing is installed
    block = (1).to_bytes(4, "little") + b"\0" * 20 + (60012).to_bytes(4, "little")
    monkeypatch.setattr(import_, "STDIN", pipe_with(block.ljust(1024, b"\0")))
    env = osenv.parse(
        "import",
        ganeti_environ(tmp_path / "d.img", IMPORT_DEVICE=str(tmp_path / "d.img"), IMPORT_INDEX="0"),
    )
    ctx = install.Install(env, Settings(), contextlib.ExitStack(), tmp_path / "d.img", None)
    with pytest.raises(ToolNotFoundError, match="restore not found: install dump"):
        import_.read_stream_head(ctx)


def test_tar_failing_on_a_foreign_stream_is_a_stream_error(
    fp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(runner, "find_tool", lambda name: f"/fake/{name}")
    fp.register(["/fake/tar", fp.any()], returncode=2, stderr="tar: Skipping to next header\n")
    data = tar_bytes()
    monkeypatch.setattr(import_, "STDIN", pipe_with(data[512:]))
    env = osenv.parse(
        "import",
        ganeti_environ(tmp_path / "d.img", IMPORT_DEVICE=str(tmp_path / "d.img"), IMPORT_INDEX="0"),
    )
    ctx = mounted_context(env, Settings(), tmp_path, stream.Head("tar", data[:512]))
    with pytest.raises(
        StreamError, match=r"tar cannot restore the stream.*Skipping to next header"
    ):
        import_.restore_files(ctx)


@pytest.mark.parametrize(
    ("fstab_line", "link", "remade"),
    [
        ("/swapfile\tnone\tswap\tsw\t0 0", False, True),
        ("/swapfile none swap defaults,pri=5 0 0", False, True),
        ("# /swapfile none swap sw 0 0", False, False),  # not swapped on: left as it is
        ("/var/swap none swap sw 0 0", False, False),
        ("/swapfile none swap sw 0 0", True, False),  # a link is no swap file
    ],
)
def test_import_remakes_only_the_swap_file_fstab_swaps_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fstab_line: str, link: bool, remade: bool
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/fstab").write_text(f"UUID=r / btrfs noatime 0 0\n{fstab_line}\n")
    if link:
        (tmp_path / "swapfile").symlink_to("/etc/fstab")
    else:
        (tmp_path / "swapfile").write_bytes(b"restored")
    os.utime(tmp_path, ns=(1, 2))
    calls: list[tuple[str, int]] = []

    def add_swap_file(root: GuestRoot, fstype: str, size: int) -> str:
        calls.append((fstype, size))
        assert not os.path.lexists(tmp_path / "swapfile")  # the restored one is gone first
        return "UUID"

    monkeypatch.setattr(import_.install, "add_swap_file", add_swap_file)
    env = osenv.parse(
        "import",
        ganeti_environ(tmp_path / "d.img", IMPORT_DEVICE=str(tmp_path / "d.img"), IMPORT_INDEX="0"),
    )
    planned = layout.plan(Settings(filesystem="btrfs"), 1 << 30)
    ctx = mounted_context(env, Settings(), tmp_path, planned=planned)
    import_.remake_swap_file(ctx)
    assert calls == ([("btrfs", 8)] if remade else [])
    assert os.stat(tmp_path).st_mtime_ns == 2  # root's times stay


def test_a_raw_stream_larger_than_the_disk_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "disk1.img"
    disk.write_bytes(b"\0" * 4096)
    monkeypatch.setattr(import_, "STDIN", pipe_with(os.urandom(5000)))
    env = osenv.parse(
        "import", ganeti_environ(tmp_path / "d.img", IMPORT_DEVICE=str(disk), IMPORT_INDEX="1")
    )
    with pytest.raises(StreamError, match="larger than disk 1"):
        import_.import_raw(env, disk)
    assert disk.stat().st_size == 4096


def test_stdout_carries_only_the_data(capfd: pytest.CaptureFixture[str]) -> None:
    from gentoobootstrap.scripts import export

    with export.data_stdout() as out:
        print("a stray line")  # what a careless library might do
        os.write(1, b"a stray write\n")
        stream.write_all(out, b"DATA")
    captured = capfd.readouterr()
    assert captured.out == "DATA"
    assert "a stray line" in captured.err and "a stray write" in captured.err


def import_context(tmp_path: Path, head: stream.Head | None = None) -> Mounted[Any]:
    env = osenv.parse(
        "import",
        ganeti_environ(tmp_path / "d.img", IMPORT_DEVICE=str(tmp_path / "d.img"), IMPORT_INDEX="0"),
    )
    return mounted_context(env, Settings(), tmp_path, head)


def test_restore_errors_fail_the_import_although_restore_exits_0(
    fp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """restore -y goes on after an error and exits 0 with /etc missing: its messages tell.
    Only what restoring into a new filesystem always says is harmless."""
    monkeypatch.setattr(runner, "find_tool", lambda name: f"/fake/{name}")
    said = (
        "/sbin/restore: ./lost+found: File exists\n"
        "bad name to addentry ./e/c\n"
        "\x1b[2Jcannot find\n"
        "/sbin/restore: cannot open /dev/tty: No such device or address\n"
    )
    fp.register(["/fake/restore", fp.any()], stderr=said)
    block = (1).to_bytes(4, "little") + b"\0" * 20 + (60012).to_bytes(4, "little")
    monkeypatch.setattr(import_, "STDIN", pipe_with(b""))
    ctx = import_context(tmp_path, stream.Head("dump", block.ljust(1024, b"\0")))
    with pytest.raises(StreamError) as e:
        import_.restore_files(ctx)
    assert str(e.value) == (
        "restore failed on the stream: bad name to addentry ./e/c | \\x1b[2Jcannot find"
    )


def test_a_clean_restore_passes(fp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(runner, "find_tool", lambda name: f"/fake/{name}")
    # The new filesystem already has the mount points of /boot and the ESP.
    fp.register(
        ["/fake/restore", fp.any()],
        stderr="restore: ./boot: File exists\nrestore: ./efi: File exists\n",
    )
    monkeypatch.setattr(import_, "STDIN", pipe_with(b""))
    (tmp_path / "restoresymtable").write_text("")
    import_.restore_files(import_context(tmp_path, stream.Head("dump", b"\0" * 1024)))
    assert not (tmp_path / "restoresymtable").exists()


def test_header_values_are_never_logged_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A newline in a header value would forge a line of the OS log."""
    forged = "src\n12:00:00 ERROR: import: forged\x1b[31m"
    data = tar_bytes({"GENTOOBOOTSTRAP.format": "1", "GENTOOBOOTSTRAP.size": str(1 << 30),
                      "GENTOOBOOTSTRAP.instance": forged})  # fmt: skip
    monkeypatch.setattr(import_, "STDIN", pipe_with(data))
    ctx = import_context(tmp_path)
    with caplog.at_level(logging.INFO, logger="gentoobootstrap"):
        import_.read_stream_head(ctx)
    assert [r.getMessage() for r in caplog.records] == [
        "stream: an export of this OS, 1024 MiB of files from "
        "src\\n12:00:00 ERROR: import: forged\\x1b[31m"
    ]
    with pytest.raises(StreamError) as e:
        head_of(tar_bytes({"GENTOOBOOTSTRAP.format": "2\nERROR: forged"}))
    assert "\n" not in str(e.value) and "stream format 2\\nERROR: forged is not" in str(e.value)


def test_a_guest_fstab_that_is_no_regular_file_is_never_opened(tmp_path: Path) -> None:
    """A FIFO would hang export and rename for good; a link out of the guest finds nothing."""
    from gentoobootstrap.guest import installed

    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/fstab")
    assert installed._guest_file(GuestRoot(tmp_path), "/etc/fstab") is None
    (tmp_path / "etc/fstab").unlink()
    node = tmp_path.parent / f"{tmp_path.name}-node-fstab"
    node.write_text("/dev/vdb1 /boot ext4 defaults 0 2\n")
    (tmp_path / "etc/fstab").symlink_to(node)
    assert installed._guest_file(GuestRoot(tmp_path), "/etc/fstab") is None
    node.unlink()


def test_boot_is_found_in_the_fstab_text_read_when_root_was() -> None:
    """The fstab that told root is the one that tells /boot: it is not read a second time."""
    from gentoobootstrap.guest import installed

    nodes = {1: Path("/dev/loop9p1"), 2: Path("/dev/loop9p2")}
    types = {1: "ext4", 2: "ext4"}
    text = "/dev/vda1 / ext4 noatime 0 1\n/dev/vda2 /boot ext4 noatime 0 2\n"
    assert installed._boot_partition(text, nodes, types, 1) == 2
    assert installed._boot_partition("/dev/vda1 / ext4 noatime 0 1\n", nodes, types, 1) is None
    assert installed._boot_partition("", nodes, types, 1) is None


def test_restore_keeps_its_work_files_in_a_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """restore names them after the dump's date: in a shared /tmp another import of the same
    dump (or a local user) would make it fail.  It runs confined, with restoring's
    capabilities only, writing the new filesystems and its scratch /tmp."""
    seen: dict[str, object] = {}

    @contextlib.contextmanager
    def spawn(argv, **kwargs):  # type: ignore[no-untyped-def]
        jail = kwargs["jail"]
        scratch = jail.scratch
        seen.update(scratch=scratch, empty=scratch.is_dir() and not any(scratch.iterdir()),
                    tmpdir=kwargs["env"]["TMPDIR"], work=jail.work, keep=jail.keep)  # fmt: skip
        yield None

    monkeypatch.setattr(runner, "spawn", spawn)
    monkeypatch.setattr(import_, "STDIN", pipe_with(b""))
    ctx = import_context(tmp_path, stream.Head("dump", b"\0" * 1024))
    import_.restore_files(ctx)
    assert seen["empty"] is True and not Path(str(seen["scratch"])).exists()
    assert (seen["tmpdir"], seen["work"], seen["keep"]) == ("/tmp", ctx.target, RESTORING)
