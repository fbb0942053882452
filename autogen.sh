#!/bin/sh
# Generate configure and Makefile.in from a git checkout (a dist tarball ships them).
# The version comes from build-aux/git-version; PYTHON picks the interpreter that
# asks setuptools-scm for it.
set -e
cd "$(dirname "$0")"
exec autoreconf --force --install --warnings=all
