"""The screening settings form: its fields, and parsing a submission into validated changes.

Validation is the config model's own (appliance.config.validate_config, the same AppConfig
the daemons load), on the whole merged config, so the page can never write something a daemon
would refuse at start. Errors come back per field, in words, with nothing written.

Which daemon picks up a change: the status screen watches the config file and applies
what it shows at once; the screening daemon (threshold, hysteresis, distance window, the
relay) reads the config when it starts, so it needs a restart, which the page offers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from appliance.config import AppConfig, validate_config
from appliance.validate import Invalid

Kind = Literal["number", "choice", "flag", "pin"]


@dataclass(frozen=True, slots=True)
class Field:
    section: str
    key: str
    label: str
    kind: Kind
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    step: str = "any"
    unit: str = ""

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"


FIELDS: tuple[Field, ...] = (
    Field(
        "screening",
        "threshold_c",
        "Fever threshold",
        "number",
        "35.0 to 41.0; always in °C",
        step="0.1",
        unit="°C",
    ),
    Field(
        "screening",
        "hysteresis_c",
        "Hysteresis",
        "number",
        "0.0 to 1.0: how far below the threshold an elevated reading must fall",
        step="0.05",
        unit="°C",
    ),
    Field(
        "screening",
        "units",
        "Units shown",
        "choice",
        "on the screen and to viewers",
        (("C", "°C"), ("F", "°F")),
    ),
    Field(
        "screening",
        "distance_min_m",
        "Nearest distance",
        "number",
        "metres; closer asks the person to step back",
        step="0.05",
        unit="m",
    ),
    Field(
        "screening",
        "distance_max_m",
        "Farthest distance",
        "number",
        "metres; farther asks the person to come closer",
        step="0.05",
        unit="m",
    ),
    Field(
        "screen",
        "language",
        "Prompt language",
        "choice",
        "of the kiosk's screen",
        (("en", "English"), ("de", "Deutsch"), ("fr", "Français"), ("es", "Español")),
    ),
    Field("screen", "sounds", "Sounds", "flag", "tones for results and alerts"),
    Field(
        "screen",
        "hide_elevated_reading",
        "Hide elevated readings",
        "flag",
        "show 'please see staff' without the value",
    ),
    Field("gpio", "relay_enabled", "Door relay", "flag", "release the door after a normal result"),
    Field("gpio", "relay", "Relay GPIO", "pin", "BCM number 0..53; empty when no relay is fitted"),
    Field("gpio", "relay_open_s", "Relay open time", "number", "seconds, up to 60", step="0.5", unit="s"),
)
BY_NAME = {f.name: f for f in FIELDS}

# Read when the screen daemon sees the file change (seconds); the rest at a daemon's start.
LIVE = frozenset({"screening.units", "screen.language", "screen.sounds", "screen.hide_elevated_reading"})
RESTART: dict[str, str] = {
    "screening.threshold_c": "screening",
    "screening.hysteresis_c": "screening",
    "screening.units": "screening",
    "screening.distance_min_m": "screening",
    "screening.distance_max_m": "screening",
    "gpio.relay_enabled": "screening",
    "gpio.relay": "screening",
    "gpio.relay_open_s": "screening",
}


def current_values(config: AppConfig) -> dict[str, str]:
    """The form's values as the page shows them."""
    out = {}
    for f in FIELDS:
        value = getattr(getattr(config, f.section), f.key)
        if f.kind == "flag":
            out[f.name] = "on" if value else ""
        elif value is None:
            out[f.name] = ""
        else:
            out[f.name] = str(value)
    return out


def _raw(f: Field, form: Mapping[str, str]) -> tuple[Any, str | None]:
    """The submitted value, lightly normalised, or why it cannot be one."""
    text = form.get(f.name, "").strip()
    if f.kind == "flag":
        return text in ("on", "true", "1", "yes"), None
    if f.kind == "pin":
        return ("none" if text == "" or text.lower() == "none" else text), None
    if f.kind == "number":
        text = text.replace(",", ".")  # a decimal comma, as typed in much of Europe
        if text == "":
            return None, "required"
        try:
            number = float(text)
        except ValueError:
            return None, "not a number"
        if not math.isfinite(number):
            return None, "not a finite number"
        return number, None
    return text, None


def parse(form: Mapping[str, str], data: dict[str, Any]) -> tuple[AppConfig | None, dict[str, str]]:
    """(the config the submission makes, {}) or (None, {field name: problem})."""
    errors: dict[str, str] = {}
    changes: dict[tuple[str, str], Any] = {}
    for f in FIELDS:
        value, problem = _raw(f, form)
        if problem is not None:
            errors[f.name] = problem
        else:
            changes[(f.section, f.key)] = value
    # Each value alone first, so every bad field gets its message: validation stops at the first.
    for (section, key), value in changes.items():
        try:
            validate_config({section: {key: value}})
        except Invalid as exc:
            errors[f"{section}.{key}"] = exc.message
    if errors:
        return None, errors
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (section, key), value in changes.items():
        merged.setdefault(section, {})[key] = value
    try:
        config = validate_config(merged)
    except Invalid as exc:
        name = ".".join(str(p) for p in exc.loc[:2])
        if name in BY_NAME:
            return None, {name: exc.message}
        # A key the form does not show: name it, or it cannot be found in the file.
        return None, {"_form": f"{'.'.join(map(str, exc.loc))}: {exc.message}"}
    if config.screening.distance_min_m >= config.screening.distance_max_m:
        return None, {"screening.distance_min_m": "must be less than the farthest distance"}
    return config, {}


def changed(old: AppConfig, new: AppConfig) -> dict[tuple[str, str], Any]:
    """The form's keys whose value differs, with their new typed values."""
    out = {}
    for f in FIELDS:
        before = getattr(getattr(old, f.section), f.key)
        after = getattr(getattr(new, f.section), f.key)
        if before != after:
            out[(f.section, f.key)] = after
    return out
