#!/bin/bash
# Run an ebuild's phases without Portage, so tests can check its install image
# offline.
#
#   ebuild-phases.sh EBUILD SOURCE WORK
#
# SOURCE is the release tarball (release ebuild) or a git repository (the live
# ebuild: it is cloned where git-r3 would clone it).  The install image goes to
# WORK/image and what the ebuild tells the admin (elog and friends) to
# WORK/elog.  PYTHON must name the interpreter python-single-r1 would pick;
# USE (e.g. "test") holds the enabled USE flags.
#
# The package manager functions and the eclass functions our ebuilds call are
# defined below, following PMS (EAPI 8) and ::gentoo's eclasses closely enough
# for the image to be the one Portage makes; calling anything else fails with
# "command not found", which is the point: teach this file first.
# The variables and functions below are for the ebuild sourced at the end.
# shellcheck disable=SC2034,SC2120,SC2317
set -eEo pipefail
shopt -s nullglob

[[ $# == 3 && -f $1 && -e $2 && -n ${PYTHON} ]] ||
	{ echo "usage: PYTHON=/usr/bin/python3.X $0 EBUILD SOURCE WORK" >&2; exit 2; }
EBUILD=$(realpath "$1")
SOURCE=$(realpath "$2")
WORK=$(realpath -m "$3")

# --- the package's variables (PMS 11.1) ---
CATEGORY=$(basename "$(dirname "$(dirname "${EBUILD}")")")
PF=$(basename "${EBUILD}" .ebuild)
PN=$(basename "$(dirname "${EBUILD}")")
PVR=${PF#"${PN}"-}
PV=${PVR} PR=r0
if [[ ${PVR} =~ ^(.*)-(r[0-9]+)$ ]]; then PV=${BASH_REMATCH[1]} PR=${BASH_REMATCH[2]}; fi
P=${PN}-${PV}
FILESDIR=$(dirname "${EBUILD}")/files
DISTDIR=$(dirname "${SOURCE}")
WORKDIR=${WORK}/work
T=${WORK}/temp
D=${WORK}/image
EPREFIX=
ED=${D}
ROOT=
EROOT=
HOME=${T}
S=${WORKDIR}/${P}
USE=${USE:-}
A=
[[ -f ${SOURCE} ]] && A=$(basename "${SOURCE}")
ELOG=${WORK}/elog
export CATEGORY PF PN PVR PV PR P FILESDIR DISTDIR WORKDIR T D ED EPREFIX ROOT EROOT HOME S A

rm -rf "${WORK}"
mkdir -p "${WORKDIR}" "${T}" "${D}"
: >"${ELOG}"

die() {
	echo "die: ${*:-(no message)} (phase ${EBUILD_PHASE:-global})" >&2
	exit 1
}

_log() { printf '%s\n' "$*" | tee -a "${ELOG}" >&2; }
elog() { _log "$*"; }
einfo() { _log "$*"; }
ewarn() { _log "WARNING: $*"; }
eerror() { _log "ERROR: $*"; }
eqawarn() { _log "QA: $*"; }

has() {
	local needle=$1 x
	shift
	for x; do [[ ${x} == "${needle}" ]] && return 0; done
	return 1
}

# The words of a USE-conditional string (RESTRICT, ...) that apply with ${USE}.
_use_reduce() {
	local word cond='' active=1 words
	local -a stack=() out=()
	read -r -a words <<<"$1"
	for word in "${words[@]}"; do
		case ${word} in
			*\?) cond=${word%\?} ;;
			"(")
				stack+=("${active}")
				if [[ -n ${cond} ]]; then
					# shellcheck disable=SC2086 # USE is a list of words
					if [[ ${cond} == !* ]]; then
						has "${cond#!}" ${USE} && active=0
					else
						has "${cond}" ${USE} || active=0
					fi
					cond=
				fi
				;;
			")")
				active=${stack[-1]}
				unset 'stack[-1]'
				;;
			*) [[ ${active} == 1 ]] && out+=("${word}") ;;
		esac
	done
	echo "${out[*]}"
}

# --- eclasses: what inherit brings in ---
declare -a INHERITED=()
inherit() {
	local eclass
	for eclass; do
		INHERITED+=("${eclass}")
		case ${eclass} in
			python-single-r1) _eclass_python_single_r1 ;;
			optfeature | autotools) ;;
			git-r3) _eclass_git_r3 ;;
			*) die "inherit ${eclass}: not known to ${0##*/}" ;;
		esac
	done
}

EXPORT_FUNCTIONS() { die "EXPORT_FUNCTIONS outside an eclass"; }

_eclass_python_single_r1() {
	[[ ${PYTHON_COMPAT@a} == *a* ]] || die "PYTHON_COMPAT must be an array before inherit"
	PYTHON_DEPS=
	PYTHON_REQUIRED_USE=
	PYTHON_SINGLE_USEDEP=
	# EXPORT_FUNCTIONS pkg_setup: the ebuild may still define its own.
	pkg_setup() { python-single-r1_pkg_setup; }
}

python_gen_cond_dep() { echo "$1"; }

python-single-r1_pkg_setup() { python_setup; }

# The implementation Portage would select: PYTHON's, which must be in PYTHON_COMPAT.
python_setup() {
	EPYTHON=$(basename "${PYTHON}")
	[[ ${EPYTHON} =~ ^python3\.[0-9]+$ ]] || die "PYTHON=${PYTHON} is not /usr/bin/python3.X"
	has "${EPYTHON/./_}" "${PYTHON_COMPAT[@]}" ||
		die "${EPYTHON} is not in PYTHON_COMPAT=( ${PYTHON_COMPAT[*]} )"
	export EPYTHON PYTHON
}

# Like python-utils-r1: rewrite python shebangs to ${EPYTHON}; a shebang naming
# another version is an error, and so is finding nothing to fix.
python_fix_shebang() {
	local path file shebang interp from fixed=''
	[[ -n ${EPYTHON} ]] || die "python_fix_shebang: EPYTHON unset (python_setup not called)"
	for path; do
		[[ -e ${path} ]] || die "python_fix_shebang: ${path} does not exist"
		while IFS= read -r -d '' file; do
			IFS= read -r shebang <"${file}" || true
			[[ ${shebang} == '#!'* ]] || continue
			read -r -a interp <<<"${shebang#'#!'}"
			from='^#! *[^ ]*'
			if [[ ${interp[0]} == */env ]]; then
				interp=("${interp[@]:1}")
				from+=' *[^ ]*'
			fi
			case ${interp[0]##*/} in
				"${EPYTHON}" | python | python3) ;;
				python[0-9]* | pypy*) die "python_fix_shebang: ${file#"${D}"} has an incompatible shebang: ${shebang}" ;;
				*) continue ;;
			esac
			sed -i -e "1s|${from}|#!${EPREFIX}/usr/bin/${EPYTHON}|" "${file}" || die
			fixed=1
		done < <(find -H "${path}" -type f -print0)
	done
	[[ -n ${fixed} ]] || die "python_fix_shebang: $* did not match any fixable files"
}

python_optimize() {
	local dir
	[[ $# -gt 0 ]] || die "python_optimize: give the directories (ours is not in site-packages)"
	for dir; do
		[[ -d ${dir} ]] || die "python_optimize: ${dir} is not a directory"
		"${PYTHON}" -m compileall -q -f -o 0 -o 1 -o 2 -s "${D}" -p / "${dir}" >/dev/null ||
			die "python_optimize ${dir} failed"
	done
}

optfeature() {
	local desc=$1
	shift
	_log "  [ ] $* for ${desc}"
}

_eclass_git_r3() {
	src_unpack() { git-r3_src_unpack; }
}

git-r3_src_unpack() {
	[[ -n ${EGIT_REPO_URI} ]] || die "EGIT_REPO_URI is empty"
	git clone -q "${SOURCE}" "${S}" || die "git clone ${SOURCE} failed"
}

eautoreconf() {
	autoreconf --force --install >/dev/null || die "autoreconf failed"
}

# --- package manager functions (PMS 12.3) ---
emake() {
	# shellcheck disable=SC2086 # MAKEOPTS is a list of words
	make ${MAKEOPTS} "$@" || die "emake $* failed"
}

econf() {
	[[ -x ${ECONF_SOURCE:-.}/configure ]] || die "econf: no configure in ${PWD}"
	local help opts=(
		--prefix="${EPREFIX}"/usr
		--mandir="${EPREFIX}"/usr/share/man
		--infodir="${EPREFIX}"/usr/share/info
		--datadir="${EPREFIX}"/usr/share
		--sysconfdir="${EPREFIX}"/etc
		--localstatedir="${EPREFIX}"/var/lib
	)
	help=$("${ECONF_SOURCE:-.}"/configure --help) || die "configure --help failed"
	[[ ${help} == *--datarootdir* ]] && opts+=(--datarootdir="${EPREFIX}"/usr/share)
	[[ ${help} == *--docdir* ]] && opts+=(--docdir="${EPREFIX}/usr/share/doc/${PF}")
	[[ ${help} == *--htmldir* ]] && opts+=(--htmldir="${EPREFIX}/usr/share/doc/${PF}/html")
	[[ ${help} == *--disable-dependency-tracking* ]] && opts+=(--disable-dependency-tracking)
	[[ ${help} == *--disable-silent-rules* ]] && opts+=(--disable-silent-rules)
	[[ ${help} == *--disable-static* ]] && opts+=(--disable-static)
	[[ ${help} == *--with-sysroot* ]] && opts+=(--with-sysroot=/)
	"${ECONF_SOURCE:-.}"/configure "${opts[@]}" "$@" >"${T}/configure.out" ||
		{ cat "${T}/configure.out" "${S}/config.log" >&2; die "econf failed"; }
}

_DOCDESTTREE=
_INSDESTTREE=
_EXEDESTTREE=
declare -a _DOCOMPRESS_SKIP=()

docinto() { [[ $1 == / ]] && _DOCDESTTREE= || _DOCDESTTREE=${1#/}; }
insinto() { _INSDESTTREE=${1#/}; }
exeinto() { _EXEDESTTREE=${1#/}; }
docompress() {
	[[ $1 == -x ]] || die "docompress: only -x is known to ${0##*/}"
	shift
	_DOCOMPRESS_SKIP+=("$@")
}

# install FILES into DIR with MODE; -r copies directories (files MODE, dirs 0755).
_install_into() {
	local mode=$1 dir=$2 recursive=$3 file
	shift 3
	install -d "${dir}" || die
	for file; do
		if [[ -d ${file} ]]; then
			[[ -n ${recursive} ]] || die "${FUNCNAME[1]}: ${file} is a directory (use -r)"
			local name
			name=$(basename "$(realpath "${file}")")
			[[ ${file} == */. ]] && name=
			(
				cd "${file}" || exit 1
				find . -mindepth 1 -type d -print0 | xargs -0r -I{} install -d "${dir}/${name}/{}"
				find . -type f -print0 | xargs -0r -I{} install -m "${mode}" {} "${dir}/${name}/{}"
			) || die "${FUNCNAME[1]} ${file} failed"
		else
			[[ -f ${file} ]] || die "${FUNCNAME[1]}: ${file} does not exist"
			install -m "${mode}" "${file}" "${dir}/" || die
		fi
	done
}

dodoc() {
	local recursive=
	[[ $1 == -r ]] && { recursive=1; shift; }
	_install_into 0644 "${ED}/usr/share/doc/${PF}/${_DOCDESTTREE}" "${recursive}" "$@"
}

doins() {
	local recursive=
	[[ $1 == -r ]] && { recursive=1; shift; }
	_install_into 0644 "${ED}/${_INSDESTTREE}" "${recursive}" "$@"
}

newins() {
	install -D -m 0644 "$1" "${ED}/${_INSDESTTREE}/$2" || die "newins $* failed"
}

doexe() { _install_into 0755 "${ED}/${_EXEDESTTREE}" "" "$@"; }

fperms() {
	local mode=$1 file
	shift
	for file; do chmod "${mode}" "${ED}/${file#/}" || die "fperms ${mode} ${file} failed"; done
}

dodir() {
	local dir
	for dir; do install -d "${ED}/${dir#/}" || die; done
}

keepdir() {
	local dir
	for dir; do
		install -d "${ED}/${dir#/}" || die
		: >"${ED}/${dir#/}/.keep_${CATEGORY}_${PN}-${SLOT%%/*}"
	done
}

dosym() {
	local target=$1 link=$2
	if [[ $1 == -r ]]; then
		[[ $2 == /* ]] || die "dosym -r: $2 is not absolute"
		target=$(realpath -m --relative-to="$(dirname "$3")" "$2")
		link=$3
	fi
	install -d "$(dirname "${ED}/${link#/}")" || die
	ln -sn "${target}" "${ED}/${link#/}" || die "dosym $* failed"
}

einstalldocs() {
	local d
	if [[ ${DOCS@a} == *a* ]]; then
		[[ ${#DOCS[@]} -gt 0 ]] && dodoc -r "${DOCS[@]}"
	elif [[ -n ${DOCS+set} ]]; then
		# shellcheck disable=SC2086 # a string DOCS is a list of words
		[[ -n ${DOCS} ]] && dodoc -r ${DOCS}
	else
		for d in README* ChangeLog AUTHORS NEWS TODO CHANGES THANKS BUGS FAQ CREDITS CHANGELOG; do
			[[ -f ${d} && -s ${d} ]] && dodoc "${d}"
		done
	fi
	return 0
}

eapply_user() { :; }

# --- default phase functions (PMS 9.1) ---
default_pkg_setup() { :; }
default_src_unpack() {
	[[ -n ${A} ]] || return 0
	tar -xf "${DISTDIR}/${A}" -C "${WORKDIR}" || die "unpack ${A} failed"
}
default_src_prepare() {
	[[ -z ${PATCHES[*]} ]] || die "PATCHES: not known to ${0##*/}"
	eapply_user
}
default_src_configure() {
	[[ -x ${ECONF_SOURCE:-.}/configure ]] && econf
	return 0
}
default_src_compile() {
	[[ -f Makefile || -f GNUmakefile || -f makefile ]] && emake
	return 0
}
default_src_test() {
	if [[ -f Makefile || -f GNUmakefile || -f makefile ]]; then emake check; fi
}
default_src_install() {
	[[ -f Makefile || -f GNUmakefile || -f makefile ]] && emake DESTDIR="${D}" install
	einstalldocs
}
default_pkg_postinst() { :; }

default() { "default_${EBUILD_PHASE_FUNC}"; }

pkg_setup() { default_pkg_setup; }
src_unpack() { default_src_unpack; }
src_prepare() { default_src_prepare; }
src_configure() { default_src_configure; }
src_compile() { default_src_compile; }
src_test() { default_src_test; }
src_install() { default_src_install; }
pkg_postinst() { default_pkg_postinst; }

# --- the ebuild ---
# shellcheck source=/dev/null
source "${EBUILD}" || die "sourcing ${EBUILD} failed"
[[ ${EAPI} == 8 ]] || die "EAPI=${EAPI}: ${0##*/} knows EAPI 8"
[[ -n ${SLOT} && -n ${LICENSE} && -n ${DESCRIPTION} ]] || die "SLOT, LICENSE or DESCRIPTION unset"

_phase() {
	EBUILD_PHASE=${1#*_}
	EBUILD_PHASE_FUNC=$1
	export EBUILD_PHASE EBUILD_PHASE_FUNC
	echo ">>> ${1}" >&2
	"$1"
}

# What the eclasses' pkg_setup exports into the environment, whoever calls it.
_phase pkg_setup
cd "${WORKDIR}"
_phase src_unpack
[[ -d ${S} ]] || die "S=${S} does not exist after src_unpack"
cd "${S}"
_phase src_prepare
_phase src_configure
_phase src_compile
# shellcheck disable=SC2046 # RESTRICT is a list of words
if has test $(_use_reduce "${RESTRICT}"); then
	echo ">>> src_test skipped: RESTRICT=\"${RESTRICT}\" with USE=\"${USE}\"" >&2
else
	_phase src_test
fi
_phase src_install
_phase pkg_postinst
printf '%s\n' "${_DOCOMPRESS_SKIP[@]}" >"${WORK}/docompress-skip"
echo ">>> image in ${D}" >&2
