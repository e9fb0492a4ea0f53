"""The `appliance` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from appliance import __version__
from appliance.errors import ApplianceError

Command = Callable[[argparse.Namespace], int]


def _run(args: argparse.Namespace) -> int:
    from appliance import daemons

    daemons.prepare(args.daemon)  # before the runtime imports asyncio and the daemon its libraries
    from appliance.config import load_config
    from appliance.runtime import run_daemon, setup_logging

    if args.daemon == "room":
        # The hosted service reads config/room.toml, not a kiosk's appliance.toml.
        from appliance.room.daemon import run_room

        return run_room(args.config)
    try:
        main = daemons.load(args.daemon)
    except daemons.NotInThisBuild as exc:
        print(f"appliance run: {exc}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ApplianceError as exc:
        # A bad config must not start a daemon half-way; systemd shows this line in status.
        setup_logging(args.daemon)
        print(f"appliance {args.daemon}: {exc}", file=sys.stderr)
        return 1
    return run_daemon(args.daemon, main, config)


def _config_check(args: argparse.Namespace) -> int:
    from appliance.config import config_path, load_config

    try:
        load_config(args.file, apply_env=False)
    except ApplianceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{config_path(args.file)}: ok")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from appliance.demo.supervisor import run_demo

    return run_demo(
        headless=args.headless,
        duration=args.duration,
        report=args.report,
        workdir=args.workdir,
        room_url=args.room_url,
        scenario=args.scenario,
    )


def _doctor(args: argparse.Namespace) -> int:
    from appliance.doctor import run_doctor

    return run_doctor(args.config, as_json=args.json)


def _bench(args: argparse.Namespace) -> int:
    from appliance.bench import run_bench

    return run_bench(args.suite, as_json=args.json, quick=args.quick, report=args.report)


def _delegate(module: str) -> Command:
    """A command whose body lives in `module.main(args) -> int` (imported only when run)."""

    def command(args: argparse.Namespace) -> int:
        import importlib

        func: Command = importlib.import_module(module).main
        return func(args)

    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__)
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one daemon in the foreground")
    p.add_argument("daemon", help="bus, camera, thermal, screening, publisher, screen, setup or room")
    p.add_argument(
        "--config", help="config file (default $APPLIANCE_CONFIG or /etc/appliance/appliance.toml)"
    )
    p.set_defaults(func=_run)

    p = sub.add_parser("demo", help="run the whole appliance with simulated hardware")
    p.add_argument("--headless", action="store_true", help="no windows; run unattended")
    p.add_argument("--for", dest="duration", type=float, default=None, metavar="SECONDS")
    p.add_argument("--report", default=None, metavar="FILE.json", help="write a JSON summary at the end")
    p.add_argument("--workdir", default=None, help="state and sockets go here (default: a temporary dir)")
    p.add_argument(
        "--room-url",
        default=None,
        metavar="URL",
        help="join this room service instead of starting one: the kiosk pairs with it by the device"
        " flow and prints each code for an admin there to approve",
    )
    p.add_argument(
        "--scenario",
        default=None,
        metavar="NAME|FILE",
        help="the simulated scene: a bundled scenario name or a scenario file (default: demo)",
    )
    p.set_defaults(func=_demo)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a config file")
    c.add_argument("file", nargs="?", default=None)
    c.set_defaults(func=_config_check)

    p = sub.add_parser("doctor", help="check the device: sensor, camera, GPIO, bus, units, network")
    p.add_argument("--config", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("thermal", help="thermal sensor tools")
    tsub = p.add_subparsers(dest="thermal_command", required=True)
    t = tsub.add_parser("record", help="record sensor frames to the canonical JSONL format")
    t.add_argument("--seconds", type=float, required=True)
    t.add_argument("--out", required=True, metavar="FILE.jsonl")
    t.add_argument("--config", default=None)
    t.set_defaults(func=_delegate("appliance.thermal.record"))

    p = sub.add_parser("replay", help="run a thermal recording through the screening core")
    p.add_argument("file", metavar="FILE", help="a recording, JSONL or CSV")
    p.add_argument("--config", default=None)
    p.add_argument("--state-dir", default=None, help="use the site calibration stored here")
    p.add_argument("--json", action="store_true", help="one JSON object per screened person")
    p.set_defaults(func=_delegate("appliance.screening.replay_cli"))

    p = sub.add_parser("calibrate", help="compute and store the site calibration offset")
    p.add_argument("--reference", type=float, required=True, metavar="DEGC")
    p.add_argument("--recording", default=None, metavar="FILE", help="calibrate from a recording")
    p.add_argument("--state-dir", default=None)
    p.add_argument("--config", default=None)
    p.add_argument("--frames", type=int, default=50, help="frames to average (live)")
    p.add_argument(
        "--target",
        choices=["body", "surface"],
        default="body",
        help="body: a person measured with a clinical thermometer; surface: a black body",
    )
    p.set_defaults(func=_delegate("appliance.screening.calibrate_cli"))

    p = sub.add_parser("events", help="screening results and alerts")
    esub = p.add_subparsers(dest="events_command", required=True)
    e = esub.add_parser("export", help="export stored events")
    e.add_argument("--csv", action="store_true", required=True, help="CSV on stdout or --out")
    e.add_argument("--out", default=None)
    e.add_argument("--since", type=int, default=0, metavar="SEQ")
    e.add_argument("--state-dir", default=None)
    e.add_argument("--config", default=None)
    e.set_defaults(func=_delegate("appliance.screening.export"))

    p = sub.add_parser("room", help="the hosted room service's tools")
    rsub = p.add_subparsers(dest="room_command", required=True)
    r = rsub.add_parser("admin", help="admin accounts")
    asub = r.add_subparsers(dest="admin_command", required=True)
    a = asub.add_parser("add", help="add an admin; the password is asked for, or read from stdin")
    a.add_argument("username")
    a.add_argument("--config", default=None, help="room config (default $APPLIANCE_ROOM_CONFIG or /etc)")
    a.set_defaults(func=_delegate("appliance.room.admin_cli"))

    p = sub.add_parser("pair", help="pair this kiosk with a room service (RFC 8628 device flow)")
    p.add_argument("--room-url", default=None, help="the room service (default: publisher.room_url)")
    p.add_argument("--config", default=None)
    p.set_defaults(func=_delegate("appliance.pairing.cli"))

    p = sub.add_parser("bench", help="benchmarks")
    from appliance.bench import SUITES

    p.add_argument("suite", choices=[*SUITES, "all"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="a short run, for smoke tests")
    p.add_argument("--report", default=None, metavar="FILE.md", help="all: write the report table here")
    p.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`appliance doctor | head`): not an error worth a traceback.
        # Python would still complain flushing stdout at exit: point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # what a shell reports for a command ended by SIGPIPE (128 + 13)


if __name__ == "__main__":
    sys.exit(main())
