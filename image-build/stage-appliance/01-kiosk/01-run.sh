#!/bin/bash -e
# Kiosk settings: I2C and the camera on, the console quiet and never blanked, the display left to
# the appliance's screen daemon (no login prompt on tty1), persistent journal with a cap.
FW="${ROOTFS_DIR}/boot/firmware"
install -d "${FW}"
touch "${FW}/config.txt" "${FW}/cmdline.txt"

# A config.txt line, added once under [all] (later sections would limit it to one board).
set_config() {
	grep -qxF "$1" "${FW}/config.txt" || printf '%s\n' "$1" >>"${FW}/config.txt"
}
grep -qx '\[all\]' "${FW}/config.txt" || printf '\n[all]\n' >>"${FW}/config.txt"
set_config "# appliance: thermal sensor on I2C (pins 3 and 5), camera, KMS display, no splash"
set_config "dtparam=i2c_arm=on"
set_config "dtparam=i2c_arm_baudrate=400000"
set_config "camera_auto_detect=1"
set_config "dtoverlay=vc4-kms-v3d"
set_config "dtparam=audio=on"
set_config "disable_splash=1"

# cmdline.txt is one line: add each kernel argument once. sed edits no line of an empty file,
# so give a missing or empty one its line first (pi-gen's stage1 writes it; a bare rootfs has none).
[ -s "${FW}/cmdline.txt" ] || echo >"${FW}/cmdline.txt"
for arg in consoleblank=0 quiet loglevel=3 logo.nologo vt.global_cursor_default=0; do
	grep -qw -- "${arg}" "${FW}/cmdline.txt" || sed -i "1 s/\$/ ${arg}/" "${FW}/cmdline.txt"
done
sed -i '1 s/^ //' "${FW}/cmdline.txt"

install -m 0644 files/etc/modules-load.d/appliance.conf "${ROOTFS_DIR}/etc/modules-load.d/appliance.conf"
install -d "${ROOTFS_DIR}/etc/systemd/journald.conf.d"
install -m 0644 files/etc/systemd/journald.conf.d/appliance.conf \
	"${ROOTFS_DIR}/etc/systemd/journald.conf.d/appliance.conf"

# tty1 is the kiosk's screen (pygame on kmsdrm): no login prompt drawn over it. SSH and the
# other consoles (Ctrl-Alt-F2) stay for a technician.
on_chroot <<'CHROOT'
systemctl mask getty@tty1.service
systemctl set-default multi-user.target
CHROOT
