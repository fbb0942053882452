# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DESCRIPTION="Stand-in for dev-python/configobj"
HOMEPAGE="https://stub.invalid/configobj"
S=${WORKDIR}

LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64 arm64"
IUSE="python_targets_python3_11 python_targets_python3_12 python_targets_python3_13 python_targets_python3_14"
