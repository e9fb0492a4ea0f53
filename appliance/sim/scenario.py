"""Scenarios: who stands where, how warm, and what breaks, over time. One file drives every sim.

A scenario is a TOML file:

    name = "demo"
    duration = 180.0            # seconds; with loop = true, time wraps around
    loop = true
    seed = 7

    [ambient]
    temperature = 22.0          # °C at t = 0
    drift_per_hour = 0.5        # °C per hour, linear
    gradient = 0.6              # °C warmer at the top of the view than at the bottom (warm air rises)

    [[person]]
    name = "alice"
    enter = 2.0                 # s: starts walking in from far_distance
    approach = 2.0              # s to reach `distance`
    dwell = 5.0                 # s holding still at `distance`
    leave = 2.0                 # s walking back out to far_distance, then gone
    distance = 0.45             # m from the sensor while holding still
    lateral = 0.0               # m, + = right in the image
    face_height = 0.0           # m, centre of the head above the sensor axis
    core_temp = 36.8            # °C

    [[person.move]]             # optional: steps taken while dwelling (a prompt followed, say)
    after = 2.0                 # s after the dwell starts
    duration = 1.0              # s the step takes (smooth start and stop)
    distance = 0.4              # m, where they end up; left out = unchanged
    lateral = 0.0               # m; left out = unchanged

    [[object]]                  # something hot that is not a person
    name = "coffee"
    enter = 60.0
    exit = 120.0
    distance = 0.5
    lateral = 0.2
    height = -0.25
    temperature = 65.0          # °C when it appears
    cooling_minutes = 20.0      # time constant of Newtonian cooling towards ambient

    [[fault]]
    kind = "i2c_error"          # i2c_error | stuck_frames | out_of_range
    start = 150.0
    duration = 1.5

Geometry: the sensor (and the camera beside it) sit at the origin looking along +z; x is to the right of
the image, y up. `camera_view(t)` projects people and objects to normalized image coordinates
(u right, v down, both 0..1) for the camera sim; thermal_scene.py renders the same geometry for the
AMG8833. Errors name the file and the key (`person[2].core_temp`).
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field

from appliance.errors import ConfigError
from appliance.thermal.fake_amg8833 import FaultState
from appliance.validate import Invalid, convert

# Body geometry in metres: an adult head is ~0.16 m wide and ~0.23 m from chin to crown.
HEAD_WIDTH_M = 0.16
HEAD_HEIGHT_M = 0.23
TORSO_WIDTH_M = 0.42
TORSO_HEIGHT_M = 0.60
NECK_HEIGHT_M = 0.08

# The Pi Camera Module v2 field of view, the default for camera_view().
CAMERA_HFOV_DEG = 62.2
CAMERA_VFOV_DEG = 48.8


class _Model(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the scenario's parts: msgspec, not pydantic, because the thermal and camera sims
    import this and pydantic would add ~15 MB to each. Each part repeats frozen=True (mypy takes
    a subclass as frozen only when it says so) and kw_only=True (which msgspec does not inherit)."""


class Ambient(_Model, frozen=True, kw_only=True):
    temperature: Annotated[float, Meta(ge=-10.0, le=45.0, description="room temperature at t = 0, °C")] = 22.0
    drift_per_hour: Annotated[float, Meta(ge=-10.0, le=10.0, description="linear drift, °C per hour")] = 0.0
    gradient: Annotated[
        float, Meta(ge=0.0, le=5.0, description="°C warmer at the top of the view than the bottom")
    ] = 0.5


class Move(_Model, frozen=True, kw_only=True):
    """A step taken while dwelling: from wherever the person is to (distance, lateral)."""

    after: Annotated[float, Meta(ge=0.0, description="s after the dwell starts")]
    duration: Annotated[float, Meta(gt=0.0, le=60.0)] = 1.0
    distance: Annotated[
        Annotated[float, Meta(ge=0.15, le=5.0)] | None, Meta(description="m; none = unchanged")
    ] = None
    lateral: Annotated[
        Annotated[float, Meta(ge=-3.0, le=3.0)] | None, Meta(description="m; none = unchanged")
    ] = None


class Person(_Model, frozen=True, kw_only=True):
    name: Annotated[str, Meta(min_length=1)]
    enter: Annotated[float, Meta(ge=0.0, description="s: appears at far_distance and walks in")]
    approach: Annotated[float, Meta(gt=0.0, le=60.0)] = 2.0
    dwell: Annotated[float, Meta(ge=0.0, le=3600.0)] = 4.0
    leave: Annotated[float, Meta(gt=0.0, le=60.0)] = 2.0
    distance: Annotated[float, Meta(ge=0.15, le=5.0, description="m from the sensor while holding still")] = (
        0.5
    )
    far_distance: Annotated[float, Meta(ge=0.5, le=10.0)] = 2.5
    lateral: Annotated[float, Meta(ge=-2.0, le=2.0, description="m, + = right in the image")] = 0.0
    face_height: Annotated[
        float, Meta(ge=-1.0, le=1.0, description="m, head centre above the sensor axis")
    ] = 0.0
    core_temp: Annotated[float, Meta(ge=34.0, le=43.0, description="°C")] = 37.0
    sway: Annotated[
        float, Meta(ge=0.0, le=0.2, description="m, amplitude of the natural sway while standing")
    ] = 0.01
    moves: list[Move] = field(default_factory=list, name="move")

    def __post_init__(self) -> None:
        # Checks across fields; msgspec reports a ValueError here at this person's key.
        if self.far_distance <= self.distance:
            raise ValueError(f"far_distance ({self.far_distance}) must exceed distance ({self.distance})")
        free = 0.0
        for move in self.moves:
            if move.after < free - 1e-9:
                raise ValueError(f"moves overlap or are out of order (one starts at {move.after} s)")
            free = move.after + move.duration
            if move.distance is not None and move.distance >= self.far_distance:
                raise ValueError(f"a move's distance ({move.distance}) must be less than far_distance")
        if free > self.dwell + 1e-9:
            raise ValueError(f"moves must end within the dwell ({free} s > {self.dwell} s)")

    def pose_at(self, t: float) -> tuple[float, float, bool]:
        """(distance, lateral, stepping) at scenario time t during the dwell, without sway."""
        distance, lateral = self.distance, self.lateral
        since = t - (self.enter + self.approach)
        for move in self.moves:
            if since < move.after:
                break
            to_d = distance if move.distance is None else move.distance
            to_x = lateral if move.lateral is None else move.lateral
            if since < move.after + move.duration:
                k = _smoothstep((since - move.after) / move.duration)
                return distance + (to_d - distance) * k, lateral + (to_x - lateral) * k, True
            distance, lateral = to_d, to_x
        return distance, lateral, False

    @property
    def final_distance(self) -> float:
        """Where the person stands at the end of the dwell (after any moves)."""
        return self.pose_at(self.dwell_window[1])[0]

    @property
    def final_lateral(self) -> float:
        return self.pose_at(self.dwell_window[1])[1]

    @property
    def settled_at(self) -> float:
        """When the last move ends: from then to the dwell's end the person holds still."""
        start = self.enter + self.approach
        return start + max((m.after + m.duration for m in self.moves), default=0.0)

    @property
    def exit(self) -> float:
        return self.enter + self.approach + self.dwell + self.leave

    @property
    def dwell_window(self) -> tuple[float, float]:
        start = self.enter + self.approach
        return start, start + self.dwell


class HotObject(_Model, frozen=True, kw_only=True):
    name: str = "object"
    enter: Annotated[float, Meta(ge=0.0)] = 0.0
    exit: Annotated[float | None, Meta(description="s; none = stays")] = None
    distance: Annotated[float, Meta(ge=0.1, le=10.0)] = 0.5
    lateral: Annotated[float, Meta(ge=-3.0, le=3.0)] = 0.0
    height: Annotated[float, Meta(ge=-2.0, le=2.0, description="m, centre above the sensor axis")] = -0.25
    width: Annotated[float, Meta(gt=0.0, le=2.0)] = 0.08
    tall: Annotated[float, Meta(gt=0.0, le=2.0)] = 0.10
    temperature: Annotated[float, Meta(ge=-20.0, le=200.0, description="°C when it appears")] = 60.0
    cooling_minutes: Annotated[
        Annotated[float, Meta(gt=0.0)] | None, Meta(description="none = holds its temperature")
    ] = 20.0

    def __post_init__(self) -> None:
        if self.exit is not None and self.exit <= self.enter:
            raise ValueError(f"exit ({self.exit}) must be after enter ({self.enter})")


class Fault(_Model, frozen=True, kw_only=True):
    kind: Literal["i2c_error", "stuck_frames", "out_of_range"]
    start: Annotated[float, Meta(ge=0.0)]
    duration: Annotated[float, Meta(gt=0.0)]

    def active(self, t: float) -> bool:
        return self.start <= t < self.start + self.duration


@dataclass(frozen=True)
class PersonState:
    name: str
    index: int
    distance: float  # m
    lateral: float  # m
    face_height: float  # m
    core_temp: float  # °C
    phase: Literal["approach", "dwell", "step", "leave"]


@dataclass(frozen=True)
class ObjectState:
    name: str
    distance: float
    lateral: float
    height: float
    width: float
    tall: float
    temperature: float


@dataclass(frozen=True)
class ImageRegion:
    """Where something appears in a camera image: normalized, u right, v down, both 0..1."""

    kind: Literal["face", "body", "object"]
    name: str
    u: float  # centre
    v: float
    width: float  # fraction of the image width
    height: float  # fraction of the image height
    distance: float  # m, for occlusion order (nearer is drawn last)


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


class Scenario(_Model, frozen=True, kw_only=True):
    name: Annotated[str, Meta(min_length=1)]
    duration: Annotated[
        float, Meta(gt=0.0, description="s; the scenario's length, and its period when looping")
    ]
    loop: bool = True
    seed: int = 0
    ambient: Ambient = field(default_factory=Ambient)
    # The file's keys are singular ([[person]]), the attributes plural.
    people: list[Person] = field(default_factory=list, name="person")
    objects: list[HotObject] = field(default_factory=list, name="object")
    faults: list[Fault] = field(default_factory=list, name="fault")

    def local_time(self, t: float) -> float:
        return t % self.duration if self.loop else t

    def ambient_at(self, t: float) -> float:
        return self.ambient.temperature + self.ambient.drift_per_hour * self.local_time(t) / 3600.0

    def people_at(self, t: float) -> list[PersonState]:
        t = self.local_time(t)
        states = []
        for index, person in enumerate(self.people):
            if not person.enter <= t < person.exit:
                continue
            since = t - person.enter
            dwell_start, dwell_end = person.dwell_window
            lateral = person.lateral
            if t < dwell_start:
                phase: Literal["approach", "dwell", "step", "leave"] = "approach"
                span = person.far_distance - person.distance
                distance = person.far_distance - span * _smoothstep(since / person.approach)
            elif t < dwell_end:
                distance, lateral, stepping = person.pose_at(t)
                phase = "step" if stepping else "dwell"
            else:
                phase = "leave"
                final, lateral = person.final_distance, person.final_lateral
                span = person.far_distance - final
                distance = final + span * _smoothstep((t - dwell_end) / person.leave)
            # People never stand perfectly still: a slow sway, its phase fixed by seed and index.
            phi = self.seed * 0.7 + index * 2.39996
            sway_x = person.sway * math.sin(2 * math.pi * 0.25 * since + phi)
            sway_y = 0.5 * person.sway * math.sin(2 * math.pi * 0.17 * since + 1.3 * phi)
            states.append(
                PersonState(
                    name=person.name,
                    index=index,
                    distance=distance,
                    lateral=lateral + sway_x,
                    face_height=person.face_height + sway_y,
                    core_temp=person.core_temp,
                    phase=phase,
                )
            )
        return states

    def objects_at(self, t: float) -> list[ObjectState]:
        t = self.local_time(t)
        ambient = self.ambient_at(t)
        states = []
        for obj in self.objects:
            if t < obj.enter or (obj.exit is not None and t >= obj.exit):
                continue
            temperature = obj.temperature
            if obj.cooling_minutes is not None:
                # Newton's law of cooling: the excess over ambient decays exponentially.
                decay = math.exp(-(t - obj.enter) / (obj.cooling_minutes * 60.0))
                temperature = ambient + (obj.temperature - ambient) * decay
            states.append(
                ObjectState(obj.name, obj.distance, obj.lateral, obj.height, obj.width, obj.tall, temperature)
            )
        return states

    def faults_at(self, t: float) -> FaultState:
        t = self.local_time(t)
        active = {fault.kind for fault in self.faults if fault.active(t)}
        return FaultState(
            i2c_error="i2c_error" in active,
            stuck_frames="stuck_frames" in active,
            out_of_range="out_of_range" in active,
        )

    def camera_view(
        self, t: float, hfov_deg: float = CAMERA_HFOV_DEG, vfov_deg: float = CAMERA_VFOV_DEG
    ) -> list[ImageRegion]:
        """Faces, bodies and objects in normalized image coordinates, far to near (draw in this order)."""
        half_w = math.tan(math.radians(hfov_deg) / 2.0)
        half_h = math.tan(math.radians(vfov_deg) / 2.0)

        def project(
            kind: Literal["face", "body", "object"],
            name: str,
            x: float,
            y: float,
            z: float,
            w: float,
            h: float,
        ) -> ImageRegion:
            # A pinhole camera: sizes shrink as 1/z, which is what a face detector sees.
            return ImageRegion(
                kind=kind,
                name=name,
                u=0.5 + x / z / (2 * half_w),
                v=0.5 - y / z / (2 * half_h),
                width=w / z / (2 * half_w),
                height=h / z / (2 * half_h),
                distance=z,
            )

        regions = []
        for p in self.people_at(t):
            torso_y = p.face_height - HEAD_HEIGHT_M / 2 - NECK_HEIGHT_M - TORSO_HEIGHT_M / 2
            regions.append(
                project("body", p.name, p.lateral, torso_y, p.distance, TORSO_WIDTH_M, TORSO_HEIGHT_M)
            )
            regions.append(
                project("face", p.name, p.lateral, p.face_height, p.distance, HEAD_WIDTH_M, HEAD_HEIGHT_M)
            )
        for o in self.objects_at(t):
            regions.append(project("object", o.name, o.lateral, o.height, o.distance, o.width, o.tall))
        return sorted(regions, key=lambda r: -r.distance)


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def parse_scenario(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    try:
        return convert(data, Scenario)
    except Invalid as exc:
        raise ConfigError(source, _key_path(exc.loc), exc.message) from None


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    source = str(path)
    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return parse_scenario(data, source)


def bundled_scenario(name: str = "demo") -> Scenario:
    """A scenario shipped in appliance/sim/scenarios/."""
    from importlib import resources

    ref = resources.files("appliance.sim") / "scenarios" / f"{name}.toml"
    with resources.as_file(ref) as path:
        return load_scenario(path)
