# Copyright 2026 Gentoo Authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

PYTHON_COMPAT=( python3_{12..14} )

inherit optfeature python-single-r1

DESCRIPTION="Ganeti OS definition that installs Gentoo Linux into instances"
HOMEPAGE="https://github.com/zorry/ganeti-gentoobootstrap"
SRC_URI="https://github.com/zorry/ganeti-gentoobootstrap/releases/download/v${PV}/${P}.tar.gz"

LICENSE="GPL-2+"
SLOT="0"
KEYWORDS="~amd64 ~arm64"
IUSE="test"
REQUIRED_USE="${PYTHON_REQUIRED_USE}"
RESTRICT="!test? ( test )"

# What the OS scripts run (tests/packaging/test_dependencies.py keeps this
# in step with the library); xfsprogs, btrfs-progs, dosfstools, dump and
# catalyst are optional, see pkg_postinst.
RDEPEND="
	${PYTHON_DEPS}
	$(python_gen_cond_dep '
		dev-python/configobj[${PYTHON_USEDEP}]
	')
	app-arch/bzip2
	app-arch/gzip
	app-arch/tar
	app-arch/xz-utils
	app-arch/zstd
	app-crypt/gnupg
	sec-keys/openpgp-keys-gentoo-release
	sys-apps/util-linux
	sys-fs/e2fsprogs
"
# configure checks that ${PYTHON} can import configobj.
BDEPEND="
	${PYTHON_DEPS}
	$(python_gen_cond_dep '
		dev-python/configobj[${PYTHON_USEDEP}]
		test? (
			dev-python/pytest[${PYTHON_USEDEP}]
			dev-python/pytest-subprocess[${PYTHON_USEDEP}]
			dev-python/sh[${PYTHON_USEDEP}]
		)
	')
"

OS_DIR="/usr/share/ganeti/os"
CONF_DIR="/etc/ganeti/instance-gentoobootstrap"

src_configure() {
	# econf's --localstatedir is /var/lib; the stage cache belongs in /var/cache.
	econf \
		--localstatedir="${EPREFIX}"/var \
		--with-os-dir="${EPREFIX}${OS_DIR}" \
		PYTHON="${PYTHON}"
}

src_install() {
	# The OS definition, the library, the configuration under /etc (which
	# CONFIG_PROTECT covers; example hooks there stay non-executable until the
	# admin enables one) and every example under docdir.
	default

	python_fix_shebang "${ED}${OS_DIR}"/gentoobootstrap "${ED}"/usr/sbin
	python_optimize "${ED}"/usr/share/${PN}/python
	docompress -x /usr/share/doc/${PF}/examples
	keepdir "${CONF_DIR}"/hooks /var/cache/${PN}

	# Ganeti reads variants.list from the OS directory, which an upgrade
	# overwrites: keep the admin's list under /etc instead.
	local os=${OS_DIR}/gentoobootstrap
	if [[ ! -L ${ED}${os}/variants.list ]]; then
		mv "${ED}${os}"/variants.list "${ED}${CONF_DIR}"/variants.list || die
		dosym -r "${CONF_DIR}"/variants.list "${os}"/variants.list
	fi
}

pkg_postinst() {
	elog "Ganeti finds this OS definition as \"gentoobootstrap\" in ${EROOT}${OS_DIR};"
	elog "install it on every node of the cluster."
	elog "Settings: ${EROOT}/etc/ganeti/ganeti-instance-gentoobootstrap"
	elog
	elog "To add a variant NAME (gnt-instance add -o gentoobootstrap+NAME ...):"
	elog "  1. add a line NAME to ${EROOT}${CONF_DIR}/variants.list"
	elog "  2. put its settings in ${EROOT}${CONF_DIR}/variants/NAME.conf"
	elog "     (examples: ${EROOT}/usr/share/doc/${PF}/examples/variants)"
	elog "Hooks run from ${EROOT}${CONF_DIR}/hooks when they are executable."
	elog
	elog "Stages and snapshots are verified with the Gentoo release keys in"
	elog "${EROOT}/usr/share/openpgp-keys/gentoo-release.asc (sec-keys/openpgp-keys-gentoo-release)."

	optfeature "XFS root file systems (filesystem=xfs)" sys-fs/xfsprogs
	optfeature "btrfs root file systems (filesystem=btrfs)" sys-fs/btrfs-progs
	optfeature "EFI system partitions (PARTITION_STYLE=gpt, BOOT_FIRMWARE)" sys-fs/dosfstools
	optfeature "building stage4 tarballs for variants (CATALYST_SPEC)" dev-util/catalyst
	optfeature "importing ganeti-instance-debootstrap's dump exports" app-arch/dump
}
