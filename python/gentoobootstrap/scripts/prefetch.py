"""``gentoobootstrap-fetch``: fill the stage cache ahead of time, list it, clean it.

Run it from cron on every node so that creates never wait for a download::

    gentoobootstrap-fetch                     # every variant in variants.list
    gentoobootstrap-fetch --variant default   # one variant (repeatable)
    gentoobootstrap-fetch --list
    gentoobootstrap-fetch --clean --older-than 30
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from gentoobootstrap import cli, log
from gentoobootstrap.config import files
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import images
from gentoobootstrap.stages import cache, obtain

logger = logging.getLogger("gentoobootstrap")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gentoobootstrap-fetch",
        description="Download and verify the stages and snapshots of the variants into the cache.",
    )
    parser.add_argument(
        "--variant",
        action="append",
        help="variant to fetch for (repeatable; default: every variant in variants.list)",
    )
    parser.add_argument("--list", action="store_true", help="list the cache and exit")
    parser.add_argument("--clean", action="store_true", help="remove cache entries and exit")
    parser.add_argument(
        "--older-than",
        type=int,
        metavar="DAYS",
        help="with --clean: only entries the mirror has not confirmed for DAYS days",
    )
    parser.add_argument("--debug", action="store_true", help="log every command run")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.older_than is not None and not args.clean:
        _parser().error("--older-than needs --clean")
    log.setup(args.debug)

    def run() -> None:
        variants = args.variant or files.listed_variants()
        all_settings = [files.load(variant) for variant in variants]
        cache_dirs = sorted({s.cache_dir for s in all_settings})
        if args.list:
            for cache_dir in cache_dirs:
                print(listing(cache_dir))
        elif args.clean:
            for cache_dir in cache_dirs:
                clean(cache_dir, args.older_than)
        else:
            for variant, settings in zip(variants, all_settings):
                fetch(variant, settings)

    return cli.exit_status("gentoobootstrap-fetch", run)


def fetch(variant: str, settings: Settings) -> None:
    """Fill the cache with ``variant``'s stage, its image on FILESYSTEM, and snapshot."""
    stage = obtain.stage(settings)
    logger.info("%s: stage %s", variant, stage)
    if settings.prepared_images:
        try:
            image = images.prepared(stage, settings.cache_dir, settings.filesystem)
            logger.info("%s: %s image %s", variant, settings.filesystem, image)
        except images.Unusable as e:
            logger.info("%s: no prepared %s image (%s)", variant, settings.filesystem, e)
    snapshot = obtain.snapshot(settings)
    if snapshot is not None:
        logger.info("%s: snapshot %s", variant, snapshot)


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))


def listing(cache_dir: Path) -> str:
    """One line per cache entry: kind/key, size, verified, last checked, VERIFY mode, source."""
    lines = [f"# {cache_dir}"]
    for entry in cache.entries(cache_dir):
        meta = entry.meta
        if meta is None:
            continue
        size = (entry.path / meta.file).stat().st_size / 1e6
        lines.append(
            f"{entry.path.parent.name}/{entry.path.name}  {meta.file}  {size:.1f} MB  "
            f"verified {_when(meta.verified_at)}  checked {_when(meta.checked_at)}  "
            f"VERIFY={meta.verify}  {meta.source}"
        )
        for image in sorted(entry.path.iterdir()):
            if cache.made_from(image.name) == meta.file:
                held = image.stat().st_blocks * 512 / 1e6  # sparse: what it really holds
                lines.append(f"  {image.name}  {held:.1f} MB")
    return "\n".join(lines)


def clean(cache_dir: Path, older_than: Optional[int] = None) -> None:
    """Remove every entry (or those not confirmed by the mirror for ``older_than`` days)."""
    for entry in cache.entries(cache_dir):
        with entry.locked():
            meta = entry.meta
            if older_than is not None and meta is not None and meta.fresh(older_than):
                continue
            logger.info("Removing %s", entry.path)
            entry.remove()
