"""Firmware for an unattended Raspberry Pi fever-screening and conferencing kiosk."""

__version__ = "0.1.0"
