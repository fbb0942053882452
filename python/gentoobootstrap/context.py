"""The mutable state of one install (create or import), shared by its steps."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from gentoobootstrap.layout import Layout
from gentoobootstrap.osenv import OSEnv
from gentoobootstrap.settings import Settings


@dataclass
class Context:
    """What the steps of create/import know and make.

    ``settings`` already carries the OS parameters (see config.apply_parameters).
    Every resource a step acquires goes on ``stack`` so it is released in
    reverse order on success, error and signal.
    """

    env: OSEnv
    settings: Settings
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    disk: Optional[Path] = None  # block device of the whole instance disk (BLOCKDEV for hooks)
    root_dev: Optional[Path] = None
    boot_dev: Optional[Path] = None
    swap_dev: Optional[Path] = None
    esp_dev: Optional[Path] = None  # the EFI system partition (gpt)
    target: Optional[Path] = None  # where the root filesystem is mounted
    stage: Optional[Path] = None  # the verified stage tarball to unpack
    snapshot: Optional[Path] = None  # the verified portage snapshot, if SNAPSHOT asks for one
    layout: Optional[Layout] = None  # the partitions planned for (or found on) the disk
    root_image: Optional[Path] = None  # the prepared image the root filesystem came from
