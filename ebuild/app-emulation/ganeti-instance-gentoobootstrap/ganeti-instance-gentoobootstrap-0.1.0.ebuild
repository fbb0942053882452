# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

PYTHON_COMPAT=( python3_{11..13} )

inherit optfeature python-single-r1

DESCRIPTION="Ganeti OS definition that installs Gentoo Linux into instances"
HOMEPAGE="https://github.com/zorry/ganeti-gentoobootstrap"
SRC_URI="https://github.com/zorry/ganeti-gentoobootstrap/releases/download/v${PV}/${P}.tar.gz"

LICENSE="GPL-2+"
SLOT="0"
KEYWORDS="~amd64 ~arm64"
REQUIRED_USE="${PYTHON_REQUIRED_USE}"
# make check runs pytest on the unit tests; the ebuild does not pull in pytest.
RESTRICT="test"

# What the OS scripts run (gentoobootstrap.runner.PACKAGES); xfsprogs,
# btrfs-progs and catalyst are optional, see pkg_postinst.
RDEPEND="
	${PYTHON_DEPS}
	$(python_gen_cond_dep '
		dev-python/configobj[${PYTHON_USEDEP}]
	')
	app-arch/tar
	app-arch/xz-utils
	app-arch/zstd
	app-crypt/gnupg
	sec-keys/openpgp-keys-gentoo-release
	sys-apps/util-linux
	sys-fs/e2fsprogs
"
BDEPEND="${PYTHON_DEPS}"

OS_DIR="/usr/share/ganeti/os"

src_configure() {
	# econf's default --localstatedir is /var/lib; the stage cache belongs in /var/cache.
	econf \
		--localstatedir="${EPREFIX}"/var \
		--with-os-dir="${EPREFIX}${OS_DIR}" \
		PYTHON="${PYTHON}"
}

src_install() {
	default

	python_fix_shebang "${ED}${OS_DIR}"/gentoobootstrap
	python_optimize "${ED}"/usr/share/${PN}

	# Examples stay documentation: hooks run only once the admin copies them
	# into the hooks directory and makes them executable.
	docinto examples
	dodoc -r examples/.
	docompress -x /usr/share/doc/${PF}/examples
}

pkg_postinst() {
	elog "Ganeti finds this OS definition as \"gentoobootstrap\" in ${EROOT}${OS_DIR}."
	elog "Settings: ${EROOT}/etc/ganeti/ganeti-instance-gentoobootstrap"
	elog
	elog "To add a variant NAME (used as gnt-instance add -o gentoobootstrap+NAME):"
	elog "  1. add the line NAME to ${EROOT}/etc/ganeti/instance-gentoobootstrap/variants.list"
	elog "  2. put its settings in ${EROOT}/etc/ganeti/instance-gentoobootstrap/variants/NAME.conf"
	elog "Example hooks are in ${EROOT}/usr/share/doc/${PF}/examples/hooks; copy one into"
	elog "${EROOT}/etc/ganeti/instance-gentoobootstrap/hooks and make it executable to use it."
	elog
	elog "Stages are verified with the Gentoo release keys in"
	elog "${EROOT}/usr/share/openpgp-keys/gentoo-release.asc (sec-keys/openpgp-keys-gentoo-release)."
	elog "Repeat the installation on every node of the cluster."

	optfeature "XFS root file systems (filesystem=xfs)" sys-fs/xfsprogs
	optfeature "btrfs root file systems (filesystem=btrfs)" sys-fs/btrfs-progs
	optfeature "building stage4 tarballs for variants (CATALYST_SPEC)" dev-util/catalyst
}
