# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

# @ECLASS: autotools.eclass
# @MAINTAINER:
# ganeti-instance-gentoobootstrap tests
# @SUPPORTED_EAPIS: 8
# @BLURB: Offline stand-in for Gentoo's autotools.eclass.

if [[ -z ${_AUTOTOOLS_ECLASS} ]]; then
_AUTOTOOLS_ECLASS=1

BDEPEND="
	dev-build/autoconf
	dev-build/automake
"

# @FUNCTION: eautoreconf
# @DESCRIPTION:
# Regenerate the autotools files.
eautoreconf() {
	die "${FUNCNAME}: stub eclass"
}

fi
