# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

# @ECLASS: python-single-r1.eclass
# @MAINTAINER:
# ganeti-instance-gentoobootstrap tests
# @SUPPORTED_EAPIS: 8
# @PROVIDES: python-utils-r1
# @BLURB: Offline stand-in for Gentoo's python-single-r1.eclass.
# @DESCRIPTION:
# Computes IUSE, REQUIRED_USE, PYTHON_DEPS and PYTHON_REQUIRED_USE from
# PYTHON_COMPAT the way the real eclass does, so that pkgcheck checks the
# ebuild's dependency metadata offline.

case ${EAPI} in
	8) ;;
	*) die "${ECLASS}: EAPI ${EAPI:-0} not supported" ;;
esac

if [[ -z ${_PYTHON_SINGLE_R1_ECLASS} ]]; then
_PYTHON_SINGLE_R1_ECLASS=1

inherit python-utils-r1

# @ECLASS_VARIABLE: PYTHON_COMPAT
# @REQUIRED
# @DESCRIPTION:
# The Python implementations the package supports, e.g. ( python3_{11..13} ).

# @ECLASS_VARIABLE: PYTHON_DEPS
# @OUTPUT_VARIABLE
# @DESCRIPTION:
# The dependency on the selected Python implementation.

# @ECLASS_VARIABLE: PYTHON_REQUIRED_USE
# @OUTPUT_VARIABLE
# @DESCRIPTION:
# The REQUIRED_USE that selects exactly one implementation.

# @ECLASS_VARIABLE: PYTHON_SINGLE_USEDEP
# @OUTPUT_VARIABLE
# @DESCRIPTION:
# USE dependency on packages that use python-single-r1 too.

_python_single_set_globals() {
	[[ ${PYTHON_COMPAT@a} == *a* ]] || die "PYTHON_COMPAT must be an array"
	local impl slot flags=() deps=() usedeps=()
	for impl in "${PYTHON_COMPAT[@]}"; do
		slot=${impl#python}
		flags+=( python_single_target_${impl} )
		deps+=( "python_single_target_${impl}? ( dev-lang/python:${slot/_/.} )" )
		usedeps+=( "python_single_target_${impl}(-)?" )
	done
	PYTHON_DEPS=${deps[*]}
	PYTHON_REQUIRED_USE="^^ ( ${flags[*]} )"
	local IFS=,
	PYTHON_SINGLE_USEDEP=${usedeps[*]}
	unset IFS
	IUSE=${flags[*]}
}
_python_single_set_globals
unset -f _python_single_set_globals

# @FUNCTION: python_gen_cond_dep
# @USAGE: <dependency> [<pattern>...]
# @DESCRIPTION:
# Output <dependency> once per implementation, conditional on its
# python_single_target flag, with ${PYTHON_USEDEP} expanded.
python_gen_cond_dep() {
	local dep=${1} impl out=()
	for impl in "${PYTHON_COMPAT[@]}"; do
		local PYTHON_USEDEP="python_targets_${impl}(-)"
		out+=( "python_single_target_${impl}? ( ${dep//\$\{PYTHON_USEDEP\}/${PYTHON_USEDEP}} )" )
	done
	echo "${out[*]}"
}

# @FUNCTION: python_setup
# @DESCRIPTION:
# Select the implementation and export EPYTHON and PYTHON.
python_setup() {
	die "${FUNCNAME}: stub eclass"
}

# @FUNCTION: python-single-r1_pkg_setup
# @DESCRIPTION:
# Run python_setup.
python-single-r1_pkg_setup() {
	die "${FUNCNAME}: stub eclass"
}

fi

EXPORT_FUNCTIONS pkg_setup
