"""The calibration wizard: a reference person, their temperature, a capture, the offset.

1. A person whose temperature was just taken with a clinical thermometer stands at the mark.
2. The technician enters that reference temperature (in the units the kiosk shows).
3. The screening daemon captures frames of them (bus method screening.calibrate), computes
   and stores the offset, and applies it at once; the page shows it and the history
   (appliance.screening.calstore).
"""

from __future__ import annotations

import datetime
import logging

from aiohttp import web

from appliance.bus.topics import CalibrateParams, CalibrateResult
from appliance.config import load_config
from appliance.errors import (
    ApplianceError,
    ConfigError,
    NoSuchMethod,
    NotConnected,
    RemoteError,
    RequestTimeout,
)
from appliance.screening import calstore
from appliance.setup.app import ctx_of, render, session_of
from appliance.setup.html import EMPTY, Markup, csrf_field, h, join, notice

log = logging.getLogger(__name__)

REF_MIN_C, REF_MAX_C = 30.0, 45.0
FRAMES_MIN, FRAMES_MAX, FRAMES_DEFAULT = 1, 600, 50
# The screening daemon allows 10 s + 0.2 s per frame; wait a little longer than it does.
TIMEOUT_BASE_S, TIMEOUT_PER_FRAME_S = 15.0, 0.25


def _units(request: web.Request) -> str:
    try:
        return load_config(ctx_of(request).config_file).screening.units
    except ApplianceError:
        return ctx_of(request).config.screening.units


def parse_reference(text: str, unit: str) -> tuple[float | None, str | None]:
    """The reference in °C, or why not."""
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        return None, "enter the reference temperature as a number"
    if value != value or value in (float("inf"), float("-inf")):
        return None, "enter the reference temperature as a number"
    celsius = (value - 32.0) * 5.0 / 9.0 if unit == "F" else value
    if not REF_MIN_C <= celsius <= REF_MAX_C:
        lo, hi = (REF_MIN_C, REF_MAX_C) if unit == "C" else (86.0, 113.0)
        return None, f"the reference must be between {lo:g} and {hi:g} °{unit}"
    return celsius, None


def parse_frames(text: str) -> tuple[int | None, str | None]:
    try:
        frames = int(text.strip() or FRAMES_DEFAULT)
    except ValueError:
        return None, "frames must be a whole number"
    if not FRAMES_MIN <= frames <= FRAMES_MAX:
        return None, f"frames must be {FRAMES_MIN}..{FRAMES_MAX}"
    return frames, None


def _history(request: web.Request) -> Markup:
    try:
        current, history = calstore.load(ctx_of(request).config.paths.state_dir)
    except ConfigError as exc:
        return notice("error", f"The calibration file cannot be read: {exc}")
    if current is None:
        return Markup("<p>Never calibrated: the offset is 0.</p>")
    rows = join(
        h(
            "<tr><td>{when}</td><td>{off}</td><td>{ref}</td><td>{meas}</td><td>{n}</td><td>{src}</td></tr>",
            when=datetime.datetime.fromtimestamp(r.wall_ts).strftime("%Y-%m-%d %H:%M"),
            off=f"{r.offset_c:+.2f}",
            ref=f"{r.reference_c:.2f}",
            meas=f"{r.measured_c:.2f}",
            n=r.frames,
            src=r.source,
        )
        for r in reversed([*history, current])
    )
    return h(
        '<p>Current offset: <strong id="current-offset">{off} °C</strong></p>'
        '<table id="calibration-history"><thead><tr><th>when</th><th>offset °C</th><th>reference °C</th>'
        "<th>measured °C</th><th>frames</th><th>source</th></tr></thead><tbody>{rows}</tbody></table>",
        off=f"{current.offset_c:+.2f}",
        rows=rows,
    )


def _page(
    request: web.Request, message: Markup = EMPTY, ref: str = "", frames: str = "", status: int = 200
) -> web.Response:
    unit = _units(request)
    body = h(
        "{message}<ol class=steps>"
        "<li>Take the temperature of a person with a clinical thermometer.</li>"
        "<li>Have them stand at the mark, facing the kiosk, still, for the capture.</li>"
        "<li>Enter the thermometer's reading and start the capture.</li></ol>"
        '<form method="post" action="/calibration" class="stack" id="calibrate-form">{csrf}'
        '<label>Reference temperature (°{unit}) <input name="reference" id="reference" value="{ref}" '
        'inputmode="decimal" required></label>'
        '<label>Frames to capture (about 10 a second) <input name="frames" id="frames" value="{frames}" '
        'inputmode="numeric"></label>'
        '<button type="submit" id="calibrate">Capture and calibrate</button>'
        '<p class="muted" id="calibrating" hidden>Capturing: keep the person still at the mark.</p></form>'
        "<section><h3>History</h3>{history}</section>",
        message=message,
        csrf=csrf_field(session_of(request)),
        unit=unit,
        ref=ref,
        frames=frames or str(FRAMES_DEFAULT),
        history=_history(request),
    )
    return render(request, "Calibration", body, current="/calibration", status=status)


async def calibration_page(request: web.Request) -> web.Response:
    return _page(request)


def _bus_problem(exc: Exception) -> str:
    if isinstance(exc, NotConnected):
        return "the bus is not reachable (see Status: is the bus daemon running?); nothing was captured"
    if isinstance(exc, NoSuchMethod):
        return "the screening daemon is not running: start it (Maintenance), then try again"
    if isinstance(exc, RequestTimeout):
        return "the capture did not finish in time (is the thermal daemon running?)"
    if isinstance(exc, RemoteError):
        return str(exc).removeprefix("screening.calibrate: ")
    return f"the bus is not available: {exc}"


async def calibrate(request: web.Request) -> web.Response:
    form = await request.post()
    ref_text, frames_text = str(form.get("reference", "")), str(form.get("frames", ""))
    unit = _units(request)
    reference, problem = parse_reference(ref_text, unit)
    frames, frames_problem = parse_frames(frames_text)
    problem = problem or frames_problem
    if problem is not None or reference is None or frames is None:
        return _page(
            request, notice("error", f"Not calibrated: {problem}."), ref_text, frames_text, status=400
        )
    params = CalibrateParams(reference_c=round(reference, 3), frames=frames)
    timeout = TIMEOUT_BASE_S + TIMEOUT_PER_FRAME_S * frames
    try:
        result = await ctx_of(request).request("screening.calibrate", params, timeout=timeout)
    except (TimeoutError, ApplianceError) as exc:
        return _page(
            request,
            notice("error", f"Not calibrated: {_bus_problem(exc)}."),
            ref_text,
            frames_text,
            # 503: no bus to ask, try again later; 502: the screening daemon failed or was silent.
            status=503 if isinstance(exc, NotConnected) else 502,
        )
    assert isinstance(result, CalibrateResult)
    log.info("calibrated from the setup page: offset %+.2f degC", result.offset_c)
    message = h(
        '<div class="notice ok" role="status" id="calibration-result"><p>Calibrated: offset '
        "<strong>{off} °C</strong> (measured {meas} °C against the reference {ref} °C over {n} frames). "
        "It is in use now.</p></div>",
        off=f"{result.offset_c:+.2f}",
        meas=f"{result.measured_c:.2f}",
        ref=f"{reference:.2f}",
        n=result.frames,
    )
    return _page(request, message)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/calibration", calibration_page)
    app.router.add_post("/calibration", calibrate)
