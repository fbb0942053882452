# Distributed under the terms of the GNU General Public License v2
# The metadata a dependency on ::gentoo's app-arch/dump is checked against.

EAPI=8

DESCRIPTION="Dump/restore ext2fs backup utilities"
HOMEPAGE="https://dump.sourceforge.io/"

LICENSE="BSD"
SLOT="0"
KEYWORDS="amd64 arm64"
