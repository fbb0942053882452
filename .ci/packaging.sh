#!/bin/bash
# CI, packaging part (issue #7).  Run from .ci/run after the test tools are
# installed:  PYTHON=/path/to/venv/bin/python bash .ci/packaging.sh
#
#   1. make distcheck, in a copy of the checkout (which stays unconfigured);
#   2. tests/packaging: pkgcheck on the ebuilds (offline stub repository),
#      the ebuilds' phases against the real tarball, both install flows of the
#      tarball, tarball install == checkout install, the Debian package built
#      with dpkg-buildpackage -us -uc -b and checked (lintian included).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "--- make distcheck"
git ls-files -z --cached --others --exclude-standard |
	while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
	xargs -0 cp --parents -t "$work"
build-aux/git-version >"$work/.tarball-version"
(
	cd "$work"
	./autogen.sh
	./configure PYTHON="$PYTHON" >/dev/null
	make -s distcheck
)

echo "--- tests/packaging"
"$PYTHON" -m pytest -p no:cacheprovider tests/packaging
