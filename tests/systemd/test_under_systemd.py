"""The appliance's units under a real systemd as PID 1, with simulated hardware.

One boot for the module (systemd_machine.Machine over the cached rootfs_cache rootfs): the
repository's units installed and enabled as the image does, a config with every backend
simulated, and a scenario in which a feverish person steps up every SCENE_S seconds. A bus
subscriber inside the machine (fever_subscriber.py) collects alert.fever the whole time.

The tests run in file order against that one machine: everything up; kill -9 of each daemon
(timed into the empty stretch of the scenario, so each outage falls between two visitors);
no fever alert lost; a blocked event loop killed by the watchdog; structured journal entries;
and last, stopping appliance.target. Daemons not in this build (appliance.daemons.available())
have their units masked and their tests skipped with that reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator

import msgspec
import pytest
import rootfs_cache
from systemd_machine import Machine

from appliance import daemons, doctor
from appliance.bus.topics import ScreeningResult
from appliance.doctor import CheckResult, Status

pytestmark = pytest.mark.slow

DAEMONS = list(daemons.START_ORDER)
AVAILABLE = [d for d in DAEMONS if d in daemons.available()]
MISSING = [d for d in DAEMONS if d not in AVAILABLE]

# The scenario: one feverish visitor per loop, in front of the sensor from VISIT[0] to VISIT[1]
# seconds into it; the rest of the loop is an empty scene.
SCENE_S = 14.0
VISIT = (1.0, 8.0)
SCENARIO = f"""\
name = "systemd-test"
duration = {SCENE_S}
loop = true
seed = 3

[ambient]
temperature = 22.0

[[person]]
name = "feverish"
enter = {VISIT[0]}
approach = 1.5
dwell = 4.0
leave = 1.5
distance = 0.5
core_temp = 39.0
"""
# Every backend simulated. idle_fps = 10: a restarted screening daemon relearns the empty scene
# (10 frames) in one second instead of ten, so an outage between two visitors stays between them.
CONFIG = """\
[thermal]
backend = "sim"
warmup_s = 0.0
idle_fps = 10

[screening]
system_warmup_s = 0.0

[gpio]
pin_factory = "mock"

[camera]
backend = "sim"
width = 320
height = 240
fps = 10

[publisher]
audio_backend = "sim"

[screen]
driver = "dummy"
fullscreen = false

[setup]
host = "127.0.0.1"
port = 8080
{setup_idle}
[sim]
scenario = "/etc/appliance/test-scenario.toml"
"""
# 0 = never: the tests below expect the setup daemon up once it was started, however long they take.
CONFIG = CONFIG.format(setup_idle="idle_exit_s = 0\n")
# The same with a short idle exit, for the one test of it (the setup daemon alone reads it).
IDLE_S = 10  # the shortest setup.idle_exit_s the config accepts
IDLE_CONFIG_PATH = "/etc/appliance/setup-idle.toml"
IDLE_DROPIN_PATH = "/etc/systemd/system/appliance-setup.service.d/test-idle.conf"
SETUP_SOCKET = "appliance-setup.socket"
SETUP_PORT = 8080
# Test-only: APPLIANCE_TEST_HOOKS=1 makes SIGUSR2 block a daemon's event loop (appliance/runtime.py).
# A prefix drop-in: it applies to every appliance-*.service.
HOOKS = "[Service]\nEnvironment=APPLIANCE_TEST_HOOKS=1\n"
# appliance-recover@.service waits APPLIANCE_RECOVER_DELAY_S (30 s on a device) before it starts a
# unit that hit its start limit again; the test takes the same path with a short wait.
RECOVER_DELAY_S = 2.0
RECOVER_DROPIN = f"[Service]\nEnvironment=APPLIANCE_RECOVER_DELAY_S={RECOVER_DELAY_S:g}\n"
START_LIMIT_BURST = 10

READY_AFTER_KILL_S = 3.0
STOP_S = 5.0
WATCHDOG_S = 10.0
# The kill goes in right after the visitor has left; the daemon is back well before the next.
KILL_AT = VISIT[1] + 0.5
SUBSCRIBER_OUT = "/var/lib/appliance-test/alerts.jsonl"


def unit(daemon: str) -> str:
    return f"appliance-{daemon}.service"


def scene_phase(now: float | None = None) -> float:
    # The sims' scene clock (appliance.sim.clock) with no epoch: CLOCK_MONOTONIC, the same here.
    return (time.monotonic() if now is None else now) % SCENE_S


class Outages:
    """When each daemon was down, in CLOCK_MONOTONIC seconds, for the loss check."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []
        self.started = 0.0

    def overlaps(self, start: float, end: float, daemons: tuple[str, ...]) -> bool:
        return any(d in daemons and a < end and b > start for d, a, b in self.spans)


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    why = rootfs_cache.unavailable()
    if why:
        pytest.skip(f"no systemd machine here: {why}")
    started = time.monotonic()
    rootfs = rootfs_cache.ensure_rootfs(log=lambda s: print(s, flush=True))
    print(f"rootfs ready in {time.monotonic() - started:.1f} s", flush=True)
    m = Machine(rootfs)
    # No setup daemon in this build: its socket would only trigger a masked service.
    m.install_units(mask=[unit(d) for d in MISSING] + ([SETUP_SOCKET] if "setup" in MISSING else []))
    m.write("/etc/appliance/appliance.toml", CONFIG)
    m.write("/etc/appliance/test-scenario.toml", SCENARIO)
    m.write("/etc/systemd/system/appliance-.service.d/test-hooks.conf", HOOKS)
    m.write("/etc/systemd/system/appliance-recover@.service.d/test-delay.conf", RECOVER_DROPIN)
    m.write("/var/lib/appliance-test/.keep", "")
    if MISSING:
        print(f"daemons not in this build (units masked): {', '.join(MISSING)}", flush=True)
    try:
        booted = time.monotonic()
        m.boot()
        print(f"systemd booted in {time.monotonic() - booted:.1f} s", flush=True)
        subscriber = f"{rootfs_cache.SRC}/tests/systemd/fever_subscriber.py"
        m.subscriber = m.popen(
            [f"{rootfs_cache.VENV}/bin/python", subscriber, SUBSCRIBER_OUT], m.workdir / "subscriber.log"
        )
        yield m
    finally:
        m.shutdown()
        if os.environ.get("APPLIANCE_TEST_KEEP") != "1":
            m.cleanup()
        else:
            print(f"kept {m.workdir}")


@pytest.fixture(scope="module")
def outages() -> Outages:
    return Outages()


WATCHED = ("ActiveState", "SubState", "MainPID", "NRestarts", "ActiveEnterTimestampMonotonic", "StatusText")


def wait_active(m: Machine, name: str, timeout: float, *, not_pid: str | None = None) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    props: dict[str, str] = {}
    while time.monotonic() < deadline:
        props = m.show(name, *WATCHED)
        running = props["ActiveState"] == "active" and props["SubState"] == "running"
        if running and props["MainPID"] != not_pid:
            return props
        time.sleep(0.05)
    log = m.journal("-u", name, "-n", "30")
    raise AssertionError(f"{name} not active (running) within {timeout:g} s: {props}\n{log}")


# A request to the setup page from inside the machine: the HTTP status, whatever it is (the page
# answered). http.client does not follow redirects, so a 30x is the answer too.
ASK_SETUP_PAGE = """
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=float(sys.argv[2]))
conn.request("GET", "/")
print(conn.getresponse().status)
"""


def ask_setup_page(m: Machine, timeout: float = 30.0) -> int:
    """Connect to the setup port and GET /: the connection alone starts the daemon (socket
    activation); the answer comes once the daemon has taken the socket and serves on it."""
    out = m.run(
        [f"{rootfs_cache.VENV}/bin/python", "-c", ASK_SETUP_PAGE, str(SETUP_PORT), str(timeout)],
        check=False,
        timeout=timeout + 10,
    )
    assert out.returncode == 0, (
        f"the setup page did not answer: {out.stderr}\n{m.journal('-u', unit('setup'), '-n', '30')}"
    )
    return int(out.stdout.strip())


def wait_inactive(m: Machine, name: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    props: dict[str, str] = {}
    while time.monotonic() < deadline:
        props = m.show(name, "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
        if props["ActiveState"] in ("inactive", "failed"):
            return props
        time.sleep(0.05)
    raise AssertionError(f"{name} still up after {timeout:g} s: {props}")


def test_the_setup_page_waits_on_its_socket_until_the_first_connection(machine: Machine) -> None:
    """appliance.target brings up appliance-setup.socket, not the setup daemon (about 40 MB used
    a few times in a kiosk's life). The first connection starts the daemon, which takes the
    listening socket (sd_listen_fds) and answers on it."""
    if "setup" in MISSING:
        pytest.skip("setup: not in this build yet (appliance.daemons.available())")
    assert machine.show("appliance.target", "ActiveState")["ActiveState"] == "active"
    sock = machine.show(SETUP_SOCKET, "ActiveState", "SubState", "Listen")
    assert sock["ActiveState"] == "active" and sock["SubState"] == "listening", sock
    assert f":{SETUP_PORT} (Stream)" in sock["Listen"], sock
    before = machine.show(unit("setup"), "ActiveState", "NRestarts")
    assert before["ActiveState"] == "inactive", f"the setup daemon was started without a connection: {before}"
    # `appliance doctor` sees that as the normal state, not as a daemon down.
    waiting = doctor_units(machine, unit("setup"))
    assert waiting.status is Status.OK and "starts it on the first connection" in waiting.detail, waiting
    status = ask_setup_page(machine)
    assert 200 <= status < 500, status
    props = wait_active(machine, unit("setup"), 5)
    assert props["NRestarts"] == "0", (props, machine.journal("-u", unit("setup"), "-n", "60", "-o", "cat"))
    # The daemon serves on the socket systemd holds: the socket stays active (running: its
    # service has it), and the daemon was started by it, not by the target.
    assert machine.show(SETUP_SOCKET, "SubState")["SubState"] == "running"
    log = machine.journal("-u", unit("setup"), "-o", "cat")
    assert "cannot listen on" not in log, log


def test_the_setup_page_exits_when_idle_and_its_socket_starts_it_again(machine: Machine) -> None:
    """After setup.idle_exit_s without a request the daemon exits with status 0: no failure, so
    Restart=on-failure leaves it down, and the socket keeps listening; the next connection starts
    it again. Here with a short idle time, through a config only the setup daemon reads."""
    if "setup" in MISSING:
        pytest.skip("setup: not in this build yet (appliance.daemons.available())")
    name = unit("setup")
    idle_config = CONFIG.replace("idle_exit_s = 0\n", f"idle_exit_s = {IDLE_S}\n")
    assert f"idle_exit_s = {IDLE_S}" in idle_config
    machine.run(["tee", IDLE_CONFIG_PATH], input=idle_config)
    machine.run(["mkdir", "-p", IDLE_DROPIN_PATH.rsplit("/", 1)[0]])
    machine.run(
        ["tee", IDLE_DROPIN_PATH], input=f"[Service]\nEnvironment=APPLIANCE_CONFIG={IDLE_CONFIG_PATH}\n"
    )
    try:
        machine.systemctl("daemon-reload")
        # Stopping the service leaves its socket listening (the socket does not depend on it).
        machine.systemctl("stop", name)
        assert machine.show(SETUP_SOCKET, "SubState")["SubState"] == "listening"
        cursor = journal_cursor(machine)
        ask_setup_page(machine)
        started = wait_active(machine, name, 5)
        exited = wait_inactive(machine, name, IDLE_S + 30)
        assert exited["ActiveState"] == "inactive", exited
        assert exited["Result"] == "success" and exited["ExecMainStatus"] == "0", exited
        assert exited["NRestarts"] == started["NRestarts"], (started, exited)
        log = machine.journal("--after-cursor", cursor, "-u", name, "-o", "cat")
        assert "Scheduled restart job" not in log, log
        sock = machine.show(SETUP_SOCKET, "ActiveState", "SubState")
        assert sock == {"ActiveState": "active", "SubState": "listening"}, sock
        # The next connection brings it back.
        ask_setup_page(machine)
        wait_active(machine, name, 5)
    finally:
        machine.run(["rm", "-f", IDLE_CONFIG_PATH, IDLE_DROPIN_PATH])
        machine.systemctl("daemon-reload")
        # Back on the module's config (no idle exit) for the tests that follow.
        machine.systemctl("stop", name)
    ask_setup_page(machine)
    wait_active(machine, name, 5)


def test_every_unit_is_active_after_ready(machine: Machine, outages: Outages) -> None:
    outages.started = time.monotonic()
    if "setup" in AVAILABLE:
        # The setup daemon is socket-activated: a connection starts it (if a test above has not).
        ask_setup_page(machine)
    problems = []
    for d in AVAILABLE:
        # Type=notify: active only once the daemon itself sent READY=1.
        try:
            props = wait_active(machine, unit(d), 60)
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        if props["NRestarts"] != "0":
            problems.append(f"{d} restarted {props['NRestarts']} times before the tests began")
        if not props["StatusText"]:
            problems.append(f"{d} sent READY=1 without a STATUS= line")
    assert not problems, "\n".join(problems)
    assert machine.show("appliance-bus.socket", "ActiveState")["ActiveState"] == "active"
    if "setup" in AVAILABLE:
        assert machine.show(SETUP_SOCKET, "ActiveState")["ActiveState"] == "active"
    assert machine.show("appliance.target", "ActiveState")["ActiveState"] == "active"
    for d in MISSING:
        assert machine.show(unit(d), "LoadState")["LoadState"] == "masked"


def test_daemons_run_as_appliance_with_their_groups(machine: Machine) -> None:
    """sysusers.d made the user and its groups; every main process has them, and no capability."""
    ids = {}
    for line in machine.run(["getent", "group"]).stdout.splitlines():
        name, _, gid, _ = line.split(":", 3)
        ids[name] = gid
    wanted = {ids[g] for g in ("i2c", "gpio", "video", "input", "audio", "render")}
    for d in AVAILABLE:
        pid = machine.show(unit(d), "MainPID")["MainPID"]
        status = dict(
            line.split(":", 1) for line in machine.run(["cat", f"/proc/{pid}/status"]).stdout.splitlines()
        )
        assert status["Gid"].split()[0] == ids["appliance"], d
        assert wanted <= set(status["Groups"].split()), d
        assert int(status["CapEff"].strip(), 16) == 0, d
        assert status["NoNewPrivs"].strip() == "1", d
    stat = machine.run(["stat", "-c", "%U:%G %a", "/run/appliance", "/var/lib/appliance"]).stdout.split("\n")
    assert stat[0] == "appliance:appliance 750" and stat[1] == "appliance:appliance 750"


def test_the_installed_units_verify_clean(machine: Machine) -> None:
    """The same verify as test_units_static, on the installed units with the real venv path."""
    units = [f"/etc/systemd/system/{p}" for p in ("appliance.target", "appliance-bus.socket")]
    if "setup" in AVAILABLE:
        units.append(f"/etc/systemd/system/{SETUP_SOCKET}")
    units += [f"/etc/systemd/system/{unit(d)}" for d in AVAILABLE]  # the others are masked
    out = machine.run(["systemd-analyze", "verify", "--man=no", *units], check=False)
    assert (out.stdout + out.stderr).strip() == ""


def wait_for_phase(phase: float) -> None:
    delay = (phase - scene_phase()) % SCENE_S
    time.sleep(delay)


@pytest.mark.parametrize("daemon", DAEMONS)
def test_kill_9_is_restarted_and_ready_within_3s(machine: Machine, outages: Outages, daemon: str) -> None:
    if daemon in MISSING:
        pytest.skip(f"{daemon}: not in this build yet (appliance.daemons.available())")
    name = unit(daemon)
    before = wait_active(machine, name, 10)
    wait_for_phase(KILL_AT)
    before = machine.show(name, "MainPID", "NRestarts")
    host_pid = machine.host_pid(int(before["MainPID"]))
    killed = time.monotonic()
    os.kill(host_pid, signal.SIGKILL)
    after = wait_active(machine, name, 15, not_pid=before["MainPID"])
    ready = int(after["ActiveEnterTimestampMonotonic"]) / 1e6
    outages.spans.append((daemon, killed, ready))
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert ready - killed <= READY_AFTER_KILL_S, f"{daemon}: READY {ready - killed:.2f} s after kill -9"
    # Up again, and `appliance doctor` says it has been restarting.
    report = doctor_units(machine, name)
    assert report.status is Status.WARN, report
    assert f"restarted it {after['NRestarts']} times" in report.detail, report
    print(f"{daemon}: READY again {ready - killed:.2f} s after kill -9")


def db_alerts(machine: Machine) -> dict[int, float]:
    """seq -> the deciding frame's time of every alert.fever in events.db."""
    db = machine.host_path("/var/lib/appliance/events.db")
    decoder = msgspec.msgpack.Decoder(ScreeningResult)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT seq, topic, payload FROM events ORDER BY seq").fetchall()
    finally:
        con.close()
    seqs = sorted({seq for seq, _, _ in rows})
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"events.db seqs have a hole: {seqs}"
    return {seq: decoder.decode(payload).end for seq, topic, payload in rows if topic == "alert.fever"}


def subscriber_alerts(machine: Machine) -> dict[int, str]:
    path = machine.host_path(SUBSCRIBER_OUT)
    lines = path.read_text().splitlines() if path.exists() else []
    return {rec["seq"]: rec["via"] for rec in map(json.loads, lines)}


def test_no_fever_alert_is_lost(machine: Machine, outages: Outages) -> None:
    if not {"bus", "thermal", "screening"} <= set(AVAILABLE):
        pytest.skip("needs the bus, thermal and screening daemons")
    end = time.monotonic()
    alerts = db_alerts(machine)
    # Every visitor who came and went while the tests ran, with the bus, thermal and screening
    # daemons up from just before (the empty scene is relearnt) to the end of the visit.
    first = int(outages.started // SCENE_S) + 1
    visits = []
    for k in range(first, int(end // SCENE_S) + 1):
        start, stop = k * SCENE_S + VISIT[0], k * SCENE_S + VISIT[1]
        if stop < end and not outages.overlaps(start - 2.0, stop, ("bus", "thermal", "screening")):
            visits.append((start, stop))
    # The kills came one per loop, each right after a visitor: most visits are clean.
    assert len(visits) >= 3, f"too few clean visits to judge: {visits}, outages {outages.spans}"
    unmatched = [v for v in visits if not any(v[0] <= t <= v[1] for t in alerts.values())]
    assert not unmatched, f"visitors with a fever and no alert in events.db: {unmatched}; alerts {alerts}"
    # Every alert in events.db reached the subscriber, live or through events_since.
    deadline = time.monotonic() + 5
    while True:
        got = subscriber_alerts(machine)
        missing = sorted(set(alerts) - set(got))
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not missing, f"alerts in events.db the subscriber never got: {missing} (got {got})"
    print(f"{len(visits)} visitors, {len(alerts)} alerts, via {sorted(set(got.values()))}")


def test_a_blocked_event_loop_is_killed_by_the_watchdog(machine: Machine) -> None:
    # All at once, so the module waits for one WatchdogSec and not one per daemon.
    running = [d for d in AVAILABLE if machine.show(unit(d), "ActiveState")["ActiveState"] == "active"]
    before = {d: machine.show(unit(d), "MainPID", "NRestarts") for d in running}
    blocked = time.monotonic()
    for d in running:
        os.kill(machine.host_pid(int(before[d]["MainPID"])), signal.SIGUSR2)
    problems = [f"{d}: not running, not tested" for d in AVAILABLE if d not in running]
    for d in running:
        try:
            props = wait_active(machine, unit(d), WATCHDOG_S + 15, not_pid=before[d]["MainPID"])
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        taken = int(props["ActiveEnterTimestampMonotonic"]) / 1e6 - blocked
        log = machine.journal("-u", unit(d), "-o", "cat")
        if int(props["NRestarts"]) != int(before[d]["NRestarts"]) + 1:
            problems.append(f"{d}: NRestarts {before[d]['NRestarts']} -> {props['NRestarts']}")
        # The limit runs from the last ping, at most WatchdogSec/2 before the block: a restart
        # sooner than that was not the watchdog's doing.
        if taken < WATCHDOG_S / 2:
            problems.append(f"{d} restarted after {taken:.1f} s, before the watchdog could fire")
        if "blocking the event loop" not in log:
            problems.append(f"{d}: the test hook did not run")
        if "Watchdog timeout" not in log:
            problems.append(f"{d}: no watchdog timeout in the journal:\n{log[-2000:]}")
    assert not problems, "\n".join(problems)


def test_the_journal_has_structured_entries(machine: Machine) -> None:
    for d in AVAILABLE:
        out = machine.run(["journalctl", "--no-pager", "-o", "json", f"APPLIANCE_DAEMON={d}"]).stdout
        entries = [json.loads(line) for line in out.splitlines()]
        ready = [e for e in entries if str(e.get("MESSAGE", "")).startswith("ready")]
        assert ready, f"{d}: no structured 'ready' entry"
        e = ready[-1]
        assert e["SYSLOG_IDENTIFIER"] == f"appliance-{d}"
        assert e["_SYSTEMD_UNIT"] == unit(d)
        assert e["_TRANSPORT"] == "journal"  # systemd-python's handler, not stdout
        assert e["LOGGER"] and e["CODE_FILE"].endswith(".py") and e["PRIORITY"] == "6"


def journal_cursor(m: Machine) -> str:
    out = m.run(["journalctl", "--no-pager", "-n", "0", "--show-cursor"], check=False).stdout
    return out.strip().rsplit("-- cursor: ", 1)[-1]


def recover_unit(name: str) -> str:
    return f"appliance-recover@{name}.service"


def doctor_units(machine: Machine, name: str) -> CheckResult:
    """`appliance doctor`'s line for one unit, with systemctl answered by the machine's systemd."""
    wrapper = machine.workdir / "systemctl-in-machine"
    wrapper.write_text(f'#!/bin/sh\nexec nsenter -t {machine.pid1} -m -p -u -i -n -r -w systemctl "$@"\n')
    wrapper.chmod(0o755)
    results = doctor.check_units([name], systemctl=str(wrapper), systemd_run=machine.workdir)
    [result] = results
    return result


@pytest.mark.parametrize("daemon", ["thermal", "bus"])
def test_a_unit_at_its_start_limit_is_started_again(machine: Machine, daemon: str) -> None:
    """kill -9 the daemon again and again, each new main process as soon as it exists, until
    systemd refuses another start (StartLimitBurst= starts in StartLimitIntervalSec=): the unit is
    `failed` and Restart= no longer helps. OnFailure= must not have fired while Restart= was
    still restarting it (the recovery would fight Restart=), must fire once the limit is hit, and
    appliance-recover@ starts the unit again after its wait.

    The bus too: its socket fails with the service (service-start-limit-hit) and clients could
    no longer connect, so both must come back."""
    if daemon in MISSING:
        pytest.skip(f"{daemon}: not in this build yet (appliance.daemons.available())")
    name = unit(daemon)
    recover = recover_unit(name)
    wait_active(machine, name, 30)
    cursor = journal_cursor(machine)
    killed: list[str] = []
    props: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        props = machine.show(name, "ActiveState", "SubState", "Result", "MainPID")
        if props["ActiveState"] == "failed":
            break
        pid = props["MainPID"]
        if pid != "0" and pid not in killed:
            with contextlib.suppress(LookupError, ProcessLookupError):
                os.kill(machine.host_pid(int(pid)), signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.02)
    failed_at = time.monotonic()
    assert props["ActiveState"] == "failed", f"{name} never hit its start limit: {props}, {len(killed)} kills"
    # systemd 252 keeps the crash's Result= (signal) when it refuses the restart: the journal says
    # it was the start limit, and that OnFailure= fired then and only then, not for the restarts.
    unit_log = machine.journal("--after-cursor", cursor, "-u", name, "-o", "cat")
    assert "Start request repeated too quickly." in unit_log, unit_log
    assert unit_log.count("Scheduled restart job") >= START_LIMIT_BURST, unit_log
    assert unit_log.count("Triggering OnFailure= dependencies.") == 1, unit_log
    limit_at = unit_log.index("Start request repeated too quickly.")
    assert unit_log.index("Triggering OnFailure=") > limit_at, unit_log
    assert len(killed) >= START_LIMIT_BURST, f"the limit came after {len(killed)} kills only"
    # The recovery is waiting now (its ExecStartPre= sleep), and had not run before.
    assert machine.show(recover, "ActiveState")["ActiveState"] == "activating"
    runs = machine.journal("--after-cursor", cursor, "-u", recover, "-o", "cat")
    assert "Finished " not in runs, f"{recover} ran before the limit:\n{runs}"
    # What `appliance doctor` tells a technician now, from this systemd.
    report = doctor_units(machine, name)
    assert report.status is Status.FAIL, report
    assert f"{recover} starts it again shortly" in report.detail, report
    if daemon == "bus":
        sock = machine.show("appliance-bus.socket", "ActiveState", "Result")
        print(f"appliance-bus.socket after the bus hit its limit: {sock}")
    after = wait_active(machine, name, RECOVER_DELAY_S + 20)
    back = int(after["ActiveEnterTimestampMonotonic"]) / 1e6
    assert back - failed_at >= RECOVER_DELAY_S - 0.5, f"started again after {back - failed_at:.2f} s"
    log = machine.journal("--after-cursor", cursor, "-u", recover, "-o", "cat")
    assert f"{name} hit its start limit" in log, f"no recovery in the journal:\n{log}"
    assert log.count("reset it and started it again") == 1 and log.count("Finished ") == 1, log
    if daemon == "bus":
        assert machine.show("appliance-bus.socket", "ActiveState")["ActiveState"] == "active"
    report = doctor_units(machine, name)
    print(f"appliance doctor after the recovery: {report.status.value}: {report.detail}")
    assert report.status in (Status.OK, Status.WARN) and report.detail.startswith("active"), report
    # The others lost the broker for a while: all of them must be (or come back) up.
    for d in AVAILABLE:
        wait_active(machine, unit(d), RECOVER_DELAY_S + 60)
    print(f"{daemon}: {len(killed)} kills to the start limit, active again {back - failed_at:.1f} s later")


def test_the_screen_comes_back_after_a_clean_exit(machine: Machine) -> None:
    """The screen exits 0 when its window is closed (rt.stop(), exit code 0); so does every
    daemon on a SIGTERM that did not come from systemd. Restart=on-failure would leave the kiosk
    dark after such an exit; the screen's unit must restart it all the same."""
    if "screen" in MISSING:
        pytest.skip("screen: not in this build yet (appliance.daemons.available())")
    name = unit("screen")
    before = wait_active(machine, name, 30)
    cursor = journal_cursor(machine)
    os.kill(machine.host_pid(int(before["MainPID"])), signal.SIGTERM)
    after = wait_active(machine, name, 15, not_pid=before["MainPID"])
    log = machine.journal("--after-cursor", cursor, "-u", name, "-o", "cat")
    # The same clean exit as a closed window: status 0, not a failure that Restart= caught.
    assert "Failed with result" not in log and "code=killed" not in log, log
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)


# What the setup page's Maintenance restart runs, as the setup daemon runs it: the appliance user.
AS_SETUP_PAGE = """
from pathlib import Path
from appliance.setup.system import SystemControl
system = SystemControl(
    state_dir=Path("/var/lib/appliance"),
    config_path=Path("/etc/appliance/appliance.toml"),
    control_dir=Path("/run/appliance/control"),
    active=True,
)
outcome = system.restart("thermal")
print(outcome.done, outcome.message)
"""


def test_the_setup_page_restarts_a_daemon_through_appliance_control(machine: Machine) -> None:
    """The setup daemon runs as the appliance user and the kiosk has no D-Bus: systemctl run by it
    cannot reach PID 1 ("Failed to connect to bus"). Its restart is a request file that
    appliance-control.service (root, started by appliance-control.path) acts on."""
    if "thermal" not in AVAILABLE:
        pytest.skip("no thermal daemon in this build")
    as_appliance = ["setpriv", "--reuid=appliance", "--regid=appliance", "--init-groups"]
    direct = machine.run([*as_appliance, "systemctl", "--no-block", "restart", unit("thermal")], check=False)
    assert direct.returncode != 0, "the appliance user reached PID 1 without the control unit"
    before = machine.show(unit("thermal"), "MainPID")["MainPID"]
    asked = machine.run([*as_appliance, f"{rootfs_cache.VENV}/bin/python", "-c", AS_SETUP_PAGE])
    assert asked.stdout.startswith("True Asked systemd to restart the thermal daemon"), asked
    wait_active(machine, unit("thermal"), 20.0, not_pid=before)
    assert machine.run(["ls", "-A", "/run/appliance/control"]).stdout == "", "the request was used up"
    log = machine.journal("-u", "appliance-control.service", "-n", "20")
    assert "restarting appliance-thermal.service" in log, log


def test_stopping_the_target_stops_everything_within_5s(machine: Machine) -> None:
    running = []
    for d in AVAILABLE:
        with contextlib.suppress(AssertionError):
            wait_active(machine, unit(d), 20)
            running.append(d)
    # A bus client outside the target would start the broker again through its socket (that is
    # what socket activation is for): the subscriber goes first.
    assert machine.subscriber is not None
    machine.kill_popen(machine.subscriber)
    started = time.monotonic()
    # The stop jobs of the services (PartOf=) run beside the target's own, which finishes first:
    # done is when the last service is inactive.
    machine.systemctl("stop", "--no-block", "appliance.target")
    states: dict[str, dict[str, str]] = {}
    while time.monotonic() - started < 30:
        states = {d: machine.show(unit(d), "ActiveState", "Result", "ExecMainStatus") for d in running}
        if all(s["ActiveState"] in ("inactive", "failed") for s in states.values()):
            break
        time.sleep(0.05)
    taken = time.monotonic() - started
    problems = [f"{d}: was not running" for d in AVAILABLE if d not in running]
    for d, props in states.items():
        # Inactive after a clean exit on SIGTERM (status 0), not a SIGKILL after TimeoutStopSec.
        if props != {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}:
            problems.append(f"{d}: {props}")
    assert taken <= STOP_S, f"stopping appliance.target took {taken:.2f} s: {states}"
    assert not problems, "\n".join(problems)
    # The setup page's socket goes with the target (PartOf=): nothing listens on its port.
    # It stops after the setup daemon (which is ordered after it), so wait for it too.
    if "setup" in AVAILABLE:
        wait_inactive(machine, SETUP_SOCKET, 10)
        assert machine.show(SETUP_SOCKET, "ActiveState")["ActiveState"] == "inactive"
    print(f"appliance.target stopped in {taken:.2f} s")
