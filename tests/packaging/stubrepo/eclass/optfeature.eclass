# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

# @ECLASS: optfeature.eclass
# @MAINTAINER:
# ganeti-instance-gentoobootstrap tests
# @SUPPORTED_EAPIS: 8
# @BLURB: Offline stand-in for Gentoo's optfeature.eclass.

if [[ -z ${_OPTFEATURE_ECLASS} ]]; then
_OPTFEATURE_ECLASS=1

# @FUNCTION: optfeature
# @USAGE: <short description> <package atom to match> [other atoms]
# @DESCRIPTION:
# Tell the user which packages enable an optional feature.
optfeature() {
	die "${FUNCNAME}: stub eclass"
}

fi
