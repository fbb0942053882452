# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

# @ECLASS: git-r3.eclass
# @MAINTAINER:
# ganeti-instance-gentoobootstrap tests
# @SUPPORTED_EAPIS: 8
# @BLURB: Offline stand-in for Gentoo's git-r3.eclass.

if [[ -z ${_GIT_R3_ECLASS} ]]; then
_GIT_R3_ECLASS=1

PROPERTIES+=" live"
BDEPEND=">=dev-vcs/git-1.8.2.1"

# @ECLASS_VARIABLE: EGIT_REPO_URI
# @REQUIRED
# @DESCRIPTION:
# URIs of the repository to clone.

# @FUNCTION: git-r3_src_unpack
# @DESCRIPTION:
# Clone the repository into ${S}.
git-r3_src_unpack() {
	die "${FUNCNAME}: stub eclass"
}

fi

EXPORT_FUNCTIONS src_unpack
