#!/bin/bash
# CI, packaging part (issue #7); .ci/run calls it after building, with its venv:
#
#   PYTHON="$VENV/bin/python3" bash .ci/packaging.sh
#
# tests/packaging: pkgcheck on the ebuilds (offline stub repository), the ebuilds'
# phases run against the real `make dist` tarball, the release procedure (tag ->
# version -> tarball name -> ebuild ${PV}), both install flows of the tarball with
# make check, tarball install == checkout install, and the Debian package built
# with `dpkg-buildpackage -us -uc -b`, taken apart and checked by lintian.
#
# Needs (CI=true turns any of them missing into a failure, not a skip):
#   Debian: autoconf automake make git debhelper dh-python build-essential lintian
#           python3-configobj
#   pip:    pytest pytest-subprocess setuptools-scm pkgcheck==0.10.37 pkgcore==0.12.30
#           (newer pkgcore wants bash >= 5.3; Debian 12 has 5.2)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
exec "$PYTHON" -m pytest -ra -p no:cacheprovider tests/packaging
