"""The machine-facing parts: systemctl (through a stand-in program that records its
arguments, as systemd is not PID 1 here), the certificate both ways, the PNG, the chart."""

from __future__ import annotations

import datetime
import logging
import ssl
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from appliance.setup import system, tls
from appliance.setup.chart import Point, chart_svg
from appliance.setup.png import encode_png
from appliance.setup.system import SystemControl

SHOW = """Id=appliance-thermal.service
LoadState=loaded
ActiveState=active
SubState=running

Id=appliance-screen.service
LoadState=loaded
ActiveState=failed
SubState=failed
"""


def stub(tmp_path: Path, *, fail: bool = False) -> tuple[str, Path]:
    """A `systemctl` that appends its arguments to a file (and prints `show` output)."""
    calls = tmp_path / "calls"
    script = tmp_path / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{calls}"\n'
        + ('echo "Failed to restart: Access denied" >&2; exit 1\n' if fail else "")
        + f'if [ "$1" = show ]; then cat <<"EOF"\n{SHOW}EOF\nfi\n'
    )
    script.chmod(0o755)
    return str(script), calls


def control(tmp_path: Path, **kw: object) -> SystemControl:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return SystemControl(state_dir=state, config_path=tmp_path / "appliance.toml", **kw)  # type: ignore[arg-type]


def test_on_a_kiosk_restart_and_reboot_go_to_systemd_without_blocking(tmp_path: Path) -> None:
    exe, calls = stub(tmp_path)
    sc = control(tmp_path, systemctl=exe, active=True)
    outcome = sc.restart("screening")
    assert outcome.done and outcome.message == "Asked systemd to restart the screening daemon."
    assert sc.reboot().done
    assert calls.read_text().splitlines() == [
        "--no-block restart appliance-screening.service",
        "--no-block reboot",
    ]
    assert not sc.restart("sshd").done, "only the appliance's daemons"
    assert calls.read_text().count("\n") == 2


def test_with_a_control_directory_restart_and_reboot_are_requests(tmp_path: Path) -> None:
    """On a kiosk the setup daemon (User=appliance, no D-Bus) cannot reach PID 1 itself: it
    leaves one empty file per request for appliance-control.service, and runs no systemctl."""
    exe, calls = stub(tmp_path)
    requests = tmp_path / "control"
    requests.mkdir()
    sc = control(tmp_path, systemctl=exe, active=True, control_dir=requests)
    outcome = sc.restart("thermal")
    assert outcome.done and outcome.message == "Asked systemd to restart the thermal daemon."
    assert sc.restart("thermal").done  # asked again before it was acted on: still one request
    assert sc.reboot().done
    assert sorted(p.name for p in requests.iterdir()) == ["reboot", "restart-thermal"]
    assert all(p.stat().st_size == 0 for p in requests.iterdir())
    assert not sc.restart("sshd").done and len(list(requests.iterdir())) == 2
    assert not calls.exists(), "no systemctl: it could not reach PID 1"
    # Not a kiosk: nothing is asked, as before.
    off = control(tmp_path, systemctl=exe, active=False, control_dir=requests)
    assert not off.restart("camera").done and not (requests / "restart-camera").exists()
    # A control directory that is not there (the units not installed): systemctl, as before.
    missing = control(tmp_path, systemctl=exe, active=True, control_dir=tmp_path / "nowhere")
    assert missing.restart("camera").done and calls.read_text().splitlines() == [
        "--no-block restart appliance-camera.service"
    ]


def test_a_refused_command_says_why(tmp_path: Path) -> None:
    exe, _ = stub(tmp_path, fail=True)
    outcome = control(tmp_path, systemctl=exe, active=True).restart("camera")
    assert not outcome.done and "Access denied" in outcome.message


def test_unit_states_from_systemctl_show(tmp_path: Path) -> None:
    exe, calls = stub(tmp_path)
    states = control(tmp_path, systemctl=exe, active=True).unit_states()
    assert states["thermal"]["ActiveState"] == "active" and states["screen"]["SubState"] == "failed"
    assert calls.read_text().startswith(
        "show --property=Id,LoadState,ActiveState,SubState -- appliance-bus.service"
    )
    assert control(tmp_path, systemctl=exe, active=False).unit_states() == {}


def test_factory_reset_on_a_kiosk_deletes_state_and_config_then_reboots(tmp_path: Path) -> None:
    exe, calls = stub(tmp_path)
    sc = control(tmp_path, systemctl=exe, active=True)
    (sc.state_dir / "events.db").write_text("x")
    (sc.state_dir / "setup-tls").mkdir()
    (sc.state_dir / "setup-tls" / "key.pem").write_text("k")
    sc.config_path.write_text("[screen]\n")
    outcome = sc.factory_reset()
    assert outcome.done, outcome.message
    assert list(sc.state_dir.iterdir()) == [] and not sc.config_path.exists()
    assert sc.state_dir.is_dir(), "the directory itself stays (systemd's StateDirectory=)"
    assert calls.read_text().splitlines() == ["--no-block reboot"]


def test_off_a_kiosk_nothing_runs(tmp_path: Path) -> None:
    exe, calls = stub(tmp_path)
    sc = control(tmp_path, systemctl=exe, active=False)
    (sc.state_dir / "events.db").write_text("x")
    for outcome in (sc.restart("thermal"), sc.reboot(), sc.factory_reset()):
        assert not outcome.done and "Nothing was done" in outcome.message
    assert not calls.exists() and (sc.state_dir / "events.db").exists()


def test_device_id_does_not_expose_the_machine_id() -> None:
    ident = system.device_id()
    assert ident and ident != "unknown"
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        return
    assert machine not in ident


@pytest.mark.parametrize("maker", ["cryptography", "openssl"])
def test_certificate_is_made_once_key_0600_names_in_san(
    tmp_path: Path, maker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if maker == "openssl":

        def no_cryptography(*args: object) -> tuple[bytes, bytes]:
            raise ImportError("pretend the cryptography package is not installed")

        monkeypatch.setattr(tls, "_with_cryptography", no_cryptography)
    cert, key = tls.ensure_certificate(tmp_path, ["192.0.2.7"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]
    san = decoded["subjectAltName"]
    assert (
        ("DNS", "localhost") in san
        and ("IP Address", "127.0.0.1") in san
        and ("IP Address", "192.0.2.7") in san
    )
    tls.server_context(cert, key)  # the pair loads as a server's
    fp = tls.fingerprint(cert)
    assert fp is not None and len(fp.split(":")) == 32
    first = cert.read_bytes()
    assert tls.ensure_certificate(tmp_path) == (cert, key) and cert.read_bytes() == first, "made once"


def test_journal_reader_runs_where_there_is_a_journal() -> None:
    from appliance.setup import logs

    if not logs.journal_available():
        pytest.skip("no systemd journal on this machine")
    for daemon in (None, "thermal"):
        lines = logs.read_journal(daemon, limit=5)
        assert len(lines) <= 5
        assert all(line.source in (daemon or line.source) for line in lines)


def test_png_encoder_round_trip() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    png = encode_png(rgb)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    i = png.index(b"IDAT")
    (n,) = struct.unpack(">I", png[i - 4 : i])
    raw = np.frombuffer(zlib.decompress(png[i + 4 : i + 4 + n]), np.uint8).reshape(2, 1 + 9)
    assert (raw[:, 0] == 0).all() and np.array_equal(raw[:, 1:].reshape(2, 3, 3), rgb)
    # Every chunk's CRC is right.
    pos = 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        body = png[pos + 4 : pos + 8 + length]
        assert struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(body)
        pos += 12 + length
    with pytest.raises(ValueError):
        encode_png(np.zeros((2, 2), np.uint8))


def test_chart_marks_by_shape_and_escapes() -> None:
    points = [Point(1000.0, 36.5, "normal"), Point(1060.0, 38.7, "elevated"), Point(1120.0, None, "retry")]
    svg = chart_svg(points, 38.0, "F")
    assert (
        svg.count("<circle") == 1
        and svg.count('class="mark elevated"') == 1
        and svg.count('class="mark retry"') == 1
    )
    assert "101.7 °F" in svg and 'class="threshold"' in svg
    assert "<script" not in chart_svg([Point(1.0, 36.0, "<script>")], 38.0)
    assert "No readings" in chart_svg([], 38.0)


# --- unit states where systemctl cannot reach PID 1 (a kiosk: User=appliance, no D-Bus) ---------


def no_bus_systemctl(tmp_path: Path) -> str:
    """What systemctl does for the appliance user on a kiosk: no D-Bus, no access to PID 1."""
    script = tmp_path / "systemctl"
    script.write_text('#!/bin/sh\necho "Failed to connect to bus: No such file or directory" >&2\nexit 1\n')
    script.chmod(0o755)
    return str(script)


def cgroup(root: Path, unit: str, **files: str) -> None:
    d = root / unit
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name.replace("_", ".")).write_text(text)


def test_without_access_to_pid1_unit_states_come_from_the_cgroup_v2_tree(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    slice_ = root / "system.slice"
    cgroup(slice_, "appliance-thermal.service", cgroup_events="populated 1\nfrozen 0\n")
    cgroup(slice_, "appliance-screen.service", cgroup_events="populated 0\nfrozen 0\n")
    sc = control(tmp_path, systemctl=no_bus_systemctl(tmp_path), active=True, cgroup_root=root)
    states = sc.unit_states()
    assert states["thermal"] == {"Source": "cgroup", "Processes": "yes"}
    assert states["screen"] == {"Source": "cgroup", "Processes": "no"}
    # systemd removes the cgroup of a unit that is not running.
    assert states["camera"] == {"Source": "cgroup", "Processes": "no"}
    assert set(states) == set(system.daemons.START_ORDER)


def test_the_legacy_named_systemd_hierarchy_is_read_too(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    slice_ = root / "systemd" / "system.slice"
    cgroup(slice_, "appliance-thermal.service", cgroup_procs="412\n")
    cgroup(slice_, "appliance-screen.service", cgroup_procs="")
    states = control(
        tmp_path, systemctl=no_bus_systemctl(tmp_path), active=True, cgroup_root=root
    ).unit_states()
    assert states["thermal"]["Processes"] == "yes" and states["screen"]["Processes"] == "no"


def test_with_neither_systemctl_nor_a_cgroup_tree_nothing_is_claimed(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    sc = control(tmp_path, systemctl=no_bus_systemctl(tmp_path), active=True, cgroup_root=root)
    assert sc.unit_states() == {}
    # A cgroup file that cannot be read says "unknown" for that unit, not "not running".
    cgroup(root / "system.slice", "appliance-thermal.service")
    (root / "system.slice" / "appliance-thermal.service" / "cgroup.events").mkdir()
    assert sc.unit_states()["thermal"]["Processes"] == "unknown"


def test_systemctl_is_still_used_where_it_works(tmp_path: Path) -> None:
    exe, _ = stub(tmp_path)
    root = tmp_path / "cgroup"
    cgroup(root / "system.slice", "appliance-thermal.service", cgroup_events="populated 0\n")
    states = control(tmp_path, systemctl=exe, active=True, cgroup_root=root).unit_states()
    assert states["thermal"]["ActiveState"] == "active" and "Source" not in states["thermal"]


def _validity(cert: Path) -> tuple[datetime.datetime, datetime.datetime]:
    from cryptography import x509

    c = x509.load_pem_x509_certificate(cert.read_bytes())
    return c.not_valid_before_utc, c.not_valid_after_utc


def test_a_certificate_made_before_ntp_synced_is_still_valid_once_it_has(tmp_path: Path) -> None:
    # A Pi has no real-time clock: the first start may run on 1970 (or on the image's build
    # date) until NTP syncs, and a certificate valid "ten years from now" would then expire
    # decades before the browsers that check it were made.
    boot = datetime.datetime(1970, 1, 1, 0, 1, tzinfo=datetime.UTC)
    cert, _ = tls.ensure_certificate(tmp_path, now=lambda: boot)
    before, after = _validity(cert)
    assert before <= boot
    assert after >= tls.CLOCK_FLOOR + datetime.timedelta(days=tls.VALID_DAYS)


def test_an_expired_certificate_is_made_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    made = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert, key = tls.ensure_certificate(tmp_path, now=lambda: made)
    old = cert.read_bytes()
    later = tls.validity(made)[1] + datetime.timedelta(days=1)
    with caplog.at_level(logging.WARNING, logger=tls.__name__):
        assert tls.ensure_certificate(tmp_path, now=lambda: later) == (cert, key)
    assert cert.read_bytes() != old
    assert _validity(cert)[1] > later
    assert any("expired" in r.getMessage() for r in caplog.records)
    # Valid, it is kept: its fingerprint is what the technician's browser remembers.
    kept = cert.read_bytes()
    assert tls.ensure_certificate(tmp_path, now=lambda: later) == (cert, key)
    assert cert.read_bytes() == kept


def test_a_certificate_not_yet_valid_by_a_clock_that_is_behind_is_kept(tmp_path: Path) -> None:
    # Made once the clock was right; a later boot runs on 1970 until NTP syncs. The clock is
    # wrong, not the certificate: making a new one would change the fingerprint for nothing.
    cert, _ = tls.ensure_certificate(
        tmp_path, now=lambda: datetime.datetime(2026, 11, 22, tzinfo=datetime.UTC)
    )
    kept = cert.read_bytes()
    tls.ensure_certificate(tmp_path, now=lambda: datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC))
    assert cert.read_bytes() == kept
