# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

# @ECLASS: python-utils-r1.eclass
# @MAINTAINER:
# ganeti-instance-gentoobootstrap tests
# @SUPPORTED_EAPIS: 8
# @BLURB: Offline stand-in for Gentoo's python-utils-r1.eclass.
# @DESCRIPTION:
# Declares the functions of the real eclass that our ebuilds call, so that
# pkgcheck can source the ebuilds without a Gentoo repository.  The bodies
# only record the call: this eclass is never used to build anything.

if [[ -z ${_PYTHON_UTILS_R1_ECLASS} ]]; then
_PYTHON_UTILS_R1_ECLASS=1

# @FUNCTION: python_fix_shebang
# @USAGE: [-f|--force] [-q|--quiet] <path>...
# @DESCRIPTION:
# Replace the python shebangs under the paths with ${EPYTHON}'s.
python_fix_shebang() {
	die "${FUNCNAME}: stub eclass"
}

# @FUNCTION: python_optimize
# @USAGE: [<directory>...]
# @DESCRIPTION:
# Compile the Python modules in the directories to bytecode.
python_optimize() {
	die "${FUNCNAME}: stub eclass"
}

# @FUNCTION: python_domodule
# @USAGE: <files>...
# @DESCRIPTION:
# Install Python modules into the site-packages of ${EPYTHON}.
python_domodule() {
	die "${FUNCNAME}: stub eclass"
}

fi
