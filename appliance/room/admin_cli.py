"""`appliance room admin add USERNAME [--config FILE]`: create an admin account.

The password never comes from the command line (argv is visible to every user through ps):
it is asked for twice on a terminal, or read as one line from stdin when stdin is not one
(`printf '%s\n' "$pw" | appliance room admin add alice`).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from appliance.errors import ApplianceError
from appliance.room.accounts import AccountError, Accounts
from appliance.room.config import load_room_config
from appliance.room.db import open_database
from appliance.room.passwords import PasswordPolicyError


def read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise AccountError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def main(args: argparse.Namespace) -> int:
    try:
        config = load_room_config(args.config)
        conn = open_database(config.service.database)
    except ApplianceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        password = read_password()
        Accounts(conn).add_admin(args.username, password, time.time())
    except (AccountError, PasswordPolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print("error: no password given", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(f"admin {args.username} added to {config.service.database}")
    return 0
