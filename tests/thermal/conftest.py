"""Shared fixtures: a fake AMG8833 on a fake bus, on a clock that moves only when told."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from appliance.thermal.amg8833 import AMG8833
from appliance.thermal.fake_amg8833 import FakeAMG8833, FakeI2C, ManualClock, StaticScene


@dataclass
class Rig:
    clock: ManualClock
    scene: StaticScene
    device: FakeAMG8833
    bus: FakeI2C

    def driver(self) -> AMG8833:
        return AMG8833(self.bus, clock=self.clock)

    def frames(self, n: int) -> None:
        """Let n frame periods pass on the sensor's clock."""
        for _ in range(n):
            self.clock.advance(0.1)
            self.device.tick()


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    factory = MockFactory()
    Device.pin_factory = factory
    yield factory
    factory.reset()
    Device.pin_factory = None


def make_rig(**options: object) -> Rig:
    clock = ManualClock(100.0)
    scene = StaticScene(22.0, ambient_c=22.0)
    # An 8x8 array, so that tests set pixels as field_c[row, col]; the fake flattens what field() gives.
    scene.field_c = np.full((8, 8), 22.0)  # type: ignore[assignment]
    device = FakeAMG8833(scene, clock=clock, **options)  # type: ignore[arg-type]
    return Rig(clock, scene, device, FakeI2C(devices={0x69: device}))


@pytest.fixture(name="make_rig")
def make_rig_fixture() -> Callable[..., Rig]:
    """A factory: tests that need several rigs or special options call it."""
    return make_rig


@pytest.fixture
def exact_rig() -> Rig:
    """No noise and no offsets: readings equal the scene, quantised."""
    return make_rig(seed=1, netd_c=0.0, offset_c=0.0, pixel_offset_std_c=0.0)
