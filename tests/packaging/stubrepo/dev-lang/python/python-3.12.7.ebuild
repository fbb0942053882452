# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DESCRIPTION="Stand-in for dev-lang/python"
HOMEPAGE="https://stub.invalid/python"
S=${WORKDIR}

LICENSE="GPL-2"
SLOT="3.12"
KEYWORDS="amd64 arm64"
