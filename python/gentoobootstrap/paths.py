"""Paths and version decided by ``configure``.

``make`` generates ``_autoconf.py`` from ``_autoconf.py.in`` (as Ganeti does);
a source checkout that was never configured gets the paths of the documented
``./configure --prefix=/usr --localstatedir=/var --sysconfdir=/etc``.
"""

from __future__ import annotations

from pathlib import Path

try:
    from gentoobootstrap import _autoconf as _ac  # type: ignore[attr-defined]

    VERSION: str = _ac.VERSION
    OS_DIR = Path(_ac.OS_DIR)
    SYSCONFDIR = Path(_ac.SYSCONFDIR)
    LOCALSTATEDIR = Path(_ac.LOCALSTATEDIR)
except ImportError:  # an unconfigured source checkout
    VERSION = "0.0.0+unconfigured"
    OS_DIR = Path("/usr/share/ganeti/os")
    SYSCONFDIR = Path("/etc")
    LOCALSTATEDIR = Path("/var")

OS_NAME = "gentoobootstrap"
#: The OS definition's own directory: where variants.list and the scripts live.
OS_PATH = OS_DIR / OS_NAME
#: The node-wide defaults file (the README documents it).
DEFAULTS_FILE = SYSCONFDIR / "ganeti" / "ganeti-instance-gentoobootstrap"
#: Per-variant settings, hooks and examples live below here.
CONF_DIR = SYSCONFDIR / "ganeti" / "instance-gentoobootstrap"
VARIANTS_DIR = CONF_DIR / "variants"
HOOKS_DIR = CONF_DIR / "hooks"
CACHE_DIR = LOCALSTATEDIR / "cache" / "ganeti-instance-gentoobootstrap"
