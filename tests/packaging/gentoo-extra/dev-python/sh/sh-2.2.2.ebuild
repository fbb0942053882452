# Distributed under the terms of the GNU General Public License v2
# The metadata a dependency on ::gentoo's dev-python/sh is checked against.

EAPI=8

PYTHON_COMPAT=( python3_{12..14} )

inherit python-r1

DESCRIPTION="Python subprocess interface"
HOMEPAGE="https://github.com/amoffat/sh/"

LICENSE="MIT"
SLOT="0"
KEYWORDS="amd64 arm64"
REQUIRED_USE="${PYTHON_REQUIRED_USE}"

RDEPEND="${PYTHON_DEPS}"
