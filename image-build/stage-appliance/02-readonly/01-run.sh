#!/bin/bash -e
# Optional read-only root (APPLIANCE_READ_ONLY=1 in the pi-gen config): an SD card that is never
# written to survives power cuts and wear. The root file system then runs under overlayroot (a
# tmpfs over the card, changes lost at reboot), and what must persist, /var/lib/appliance
# (events.db, calibration, pairing, setup password, TLS key), lives on its own partition with
# the label appliance-data, mounted read-write. image-build/README.md says how to make that
# partition; without it the kiosk boots and runs, but its state lives in the overlay and is lost
# at every reboot (the doctor's state-dir check then warns).
if [ "${APPLIANCE_READ_ONLY:-0}" != "1" ]; then
	echo "appliance: read-only root not requested (APPLIANCE_READ_ONLY=1 to enable)"
	exit 0
fi

grep -q 'LABEL=appliance-data' "${ROOTFS_DIR}/etc/fstab" ||
	printf 'LABEL=appliance-data  /var/lib/appliance  ext4  defaults,noatime,nofail,x-systemd.device-timeout=10s  0  2\n' \
		>>"${ROOTFS_DIR}/etc/fstab"

# raspi-config builds the initramfs with overlayroot for the kernel that runs, so it is switched
# on at the first boot (after appliance-firstboot made the secrets, which must land on the card).
install -d "${ROOTFS_DIR}/usr/lib/systemd/system"
cat >"${ROOTFS_DIR}/usr/lib/systemd/system/appliance-readonly.service" <<'UNIT'
[Unit]
Description=Appliance: switch the root file system to read-only (overlayroot), once
After=appliance-firstboot.service local-fs.target
ConditionPathExists=!/var/lib/appliance/.readonly-enabled

[Service]
Type=oneshot
ExecStart=/usr/bin/raspi-config nonint do_overlayfs 0
ExecStart=/usr/bin/touch /var/lib/appliance/.readonly-enabled
ExecStart=/usr/bin/systemctl --no-block reboot

[Install]
WantedBy=multi-user.target
UNIT
on_chroot <<'CHROOT'
systemctl enable appliance-readonly.service
CHROOT
