"""`appliance pair [--room-url URL] [--config FILE]`: pair this kiosk from a shell.

Runs the same device flow as the publisher's pairing (appliance.pairing.service), prints the
code and the link to enter it at, and stores the token where the daemons find it. A running
publisher picks the new token up within a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from appliance.bus.topics import PairingStatus
from appliance.config import load_config
from appliance.errors import ApplianceError
from appliance.pairing.credentials import credentials_path, device_id, load_credentials
from appliance.pairing.service import Pairing, PairingRefused


def _print_status(status: PairingStatus) -> None:
    if status.state == "code":
        minutes = max(0, round(((status.expires_at or time.time()) - time.time()) / 60))
        print(f"Code: {status.user_code}  ({status.reason}; valid for {minutes} min)", flush=True)
        print(f"  or open {status.verification_uri_complete}", flush=True)
    elif status.state == "error":
        print(f"Problem: {status.reason}", flush=True)
    elif status.state == "paired":
        print(f"Paired with room {status.room_name!r}.", flush=True)


def _state_dir_problem(state_dir: Path) -> str | None:
    """Why the token could not be stored, found before a code is shown: an admin would approve
    a code whose token is then lost. Makes the device id on the way, as the flow would."""
    try:
        device_id(state_dir)
        with tempfile.TemporaryFile(dir=state_dir, prefix=".pair-"):
            pass
    except OSError as exc:
        return f"{exc.strerror or exc}; fix paths.state_dir, or run as root or the appliance user"
    return None


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ApplianceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    url = args.room_url or config.publisher.room_url
    if not url:
        print("error: no room URL: pass --room-url or set publisher.room_url", file=sys.stderr)
        return 2
    state_dir = config.paths.state_dir
    if problem := _state_dir_problem(state_dir):
        print(f"error: cannot store the token in {state_dir}: {problem}", file=sys.stderr)
        return 1
    old = load_credentials(state_dir)
    if old is not None:
        print(f"Paired with {old.room_name!r} at {old.room_url}; a new pairing replaces it.", flush=True)
    pairing = Pairing(config, on_status=_print_status)
    try:
        asyncio.run(pairing.pair_once(url))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PairingRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the state directory broke meanwhile (full, read-only)
        print(f"error: cannot store the token in {state_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"Token stored in {credentials_path(config.paths.state_dir)} (mode 0600).")
    return 0
