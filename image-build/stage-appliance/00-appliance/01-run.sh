#!/bin/bash -e
# pi-gen runs this on the build host, with ROOTFS_DIR (the image's root) and on_chroot (a
# command run inside it) set. image-build/check runs it the same way on a debootstrapped arm64
# rootfs, so what is checked is this script.
#
#   /opt/appliance/src     the source (this repository's appliance/, config/, systemd/)
#   /opt/appliance/venv    a venv that sees the system site packages, the appliance installed
#                          into it from the source with pip (PyPI wheels for what Debian lacks)
#   /usr/lib/systemd/...   the units, sysusers.d, tmpfiles.d; enabled
#   /etc/appliance/        the shipped config
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APPLIANCE_SRC="${APPLIANCE_SRC:-$(cd "${HERE}/../../.." && pwd)}"

echo "appliance: source ${APPLIANCE_SRC}"
install -d "${ROOTFS_DIR}/opt/appliance/src"
tar -C "${APPLIANCE_SRC}" --exclude='__pycache__' --exclude='*.pyc' \
	-cf - pyproject.toml README.md appliance config systemd | tar -C "${ROOTFS_DIR}/opt/appliance/src" -xf -

echo "appliance: venv and pip install (PyPI wheels for what Debian does not have)"
on_chroot <<'CHROOT'
set -e
python3 -m venv --system-site-packages /opt/appliance/venv
/opt/appliance/venv/bin/pip install --no-cache-dir --disable-pip-version-check --progress-bar off \
	--root-user-action=ignore /opt/appliance/src
/opt/appliance/venv/bin/appliance --version
CHROOT

echo "appliance: units, users, directories, config"
install -d "${ROOTFS_DIR}/usr/lib/systemd/system" "${ROOTFS_DIR}/usr/lib/sysusers.d" \
	"${ROOTFS_DIR}/usr/lib/tmpfiles.d" "${ROOTFS_DIR}/usr/lib/appliance" "${ROOTFS_DIR}/usr/share/doc/appliance"
for unit in "${APPLIANCE_SRC}"/systemd/appliance*.service "${APPLIANCE_SRC}"/systemd/appliance*.socket \
	"${APPLIANCE_SRC}"/systemd/appliance*.path "${APPLIANCE_SRC}"/systemd/appliance.target; do
	install -m 0644 "${unit}" "${ROOTFS_DIR}/usr/lib/systemd/system/"
done
install -m 0644 "${APPLIANCE_SRC}/systemd/sysusers.d/appliance.conf" "${ROOTFS_DIR}/usr/lib/sysusers.d/appliance.conf"
install -m 0644 "${APPLIANCE_SRC}/systemd/tmpfiles.d/appliance.conf" "${ROOTFS_DIR}/usr/lib/tmpfiles.d/appliance.conf"
install -m 0644 files/usr/lib/systemd/system/appliance-firstboot.service "${ROOTFS_DIR}/usr/lib/systemd/system/"
install -m 0755 files/usr/lib/appliance/firstboot "${ROOTFS_DIR}/usr/lib/appliance/firstboot"
install -m 0644 "${APPLIANCE_SRC}/README.md" "${ROOTFS_DIR}/usr/share/doc/appliance/README.md"
install -d -m 0755 "${ROOTFS_DIR}/etc/appliance"
if [ ! -e "${ROOTFS_DIR}/etc/appliance/appliance.toml" ]; then
	install -m 0644 "${APPLIANCE_SRC}/config/appliance.toml" "${ROOTFS_DIR}/etc/appliance/appliance.toml"
fi

on_chroot <<'CHROOT'
set -e
# The user and the directories now, so the image's files have their owners; what lives in
# /run is made at every boot.
systemd-sysusers /usr/lib/sysusers.d/appliance.conf
systemd-tmpfiles --create --exclude-prefix=/run /usr/lib/tmpfiles.d/appliance.conf
# The setup page's socket, not its service: the first connection starts the daemon, which exits
# again when idle; enabled, the service would be started by appliance.target at every boot.
systemctl enable appliance-firstboot.service appliance-bus.socket appliance.target \
	appliance-bus.service appliance-thermal.service appliance-camera.service appliance-screening.service \
	appliance-publisher.service appliance-screen.service appliance-setup.socket appliance-control.path
/opt/appliance/venv/bin/appliance config check /etc/appliance/appliance.toml
CHROOT

# Never at build time: no per-device secret may be in the image. openssh-server's postinst
# made host keys in the chroot; the first boot makes this device's own.
rm -f "${ROOTFS_DIR}"/etc/ssh/ssh_host_*_key "${ROOTFS_DIR}"/etc/ssh/ssh_host_*_key.pub
rm -rf "${ROOTFS_DIR}/var/lib/appliance/device-id" "${ROOTFS_DIR}/var/lib/appliance/setup-tls"
