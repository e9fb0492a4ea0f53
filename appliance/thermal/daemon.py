"""`appliance run thermal`: the AMG8833 sampler. Publishes thermal.frame, thermal.status, thermal.interrupt.

What it does, and why:

- Frames: polled twice per sensor frame period. The chip has no data-ready signal, and polling at exactly
  the frame rate would alias against the sensor's own crystal (a frame read twice, then one missed). At
  twice the rate every frame is seen at least once; a read that returns the same bytes as the last one is
  not a new frame and is not published. Each new frame goes out as thermal.frame (ThermalFrame: 64 pixels
  row-major, row 0 = top; the envelope's ts is the monotonic time the frame was read).
- Power-aware rate: the pure SamplingPolicy (sampler.py) decides between thermal.idle_fps and
  thermal.active_fps and where the threshold interrupt sits; this module only carries out its plans.
- Interrupt: INT (active low, pulled up) is a gpiozero DigitalInputDevice. Its callback comes on
  gpiozero's thread (lgpio's, or whichever thread drove a mock pin), so it only hands the edge to the event
  loop with call_soon_threadsafe. The loop reads the status and the interrupt table, clears the flag, and
  publishes thermal.interrupt with the mask in image order: bit i is ThermalFrame.pixels[i].
- Status: thermal.status is warming-up for thermal.warmup_s after power-up or a re-initialisation, ok
  after, fault with the driver's reason while the sensor fails. Health goes degraded during a fault.
  The health status line also counts the fixture pixels the policy masks (static warm objects, see
  sampler.py), which is also why the interrupt is off while there are any.
- Faults: every SensorFault (I2C error, stuck frames, out-of-range pixels) is retried twice at once (a
  single NACK is not a broken sensor), then reported as a fault, and the sensor re-initialised with
  exponential backoff until a good frame arrives. Nothing is published in between: no repeated frame, no
  stale frame, no guess. A chip that reset by itself (a brown-out: 10 fps, interrupt and averaging off,
  no I2C error) is found by reading its settings back every SETTINGS_CHECK_S, reported as a fault and
  re-initialised at once. The daemon never exits over the sensor; it recovers by itself.
- I2C runs on one dedicated worker thread (a single-thread executor), not asyncio.to_thread: every access
  to the sensor happens in one order on one thread, which the driver, adafruit_bus_device's spinning
  bus lock and the simulated chip all assume; a slow or hung transfer never holds up the event loop
  (which keeps pinging the watchdog) and never competes with other users of the default executor. A
  128-byte burst is ~3 ms at 400 kHz, so one thread has ample headroom at 20 polls per second.
- No numpy: frames are lists of 64 floats all the way (driver, policy, bus), so the daemon's process
  does without numpy's ~12 MB of RSS (issue 8's memory budget); tests/thermal/test_no_numpy.py holds it.
- Sim backend: the simulated chip's clock is ticked every 50 ms on that same thread, so the fake is only
  ever touched by one thread and its INT edges arrive off the loop thread, as real ones do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from appliance.bus.client import BusClient
from appliance.bus.topics import ThermalFrame, ThermalInterrupt, ThermalStatus
from appliance.config import ThermalConfig
from appliance.errors import SensorFault
from appliance.runtime import Runtime
from appliance.thermal import registers as reg
from appliance.thermal.amg8833 import AMG8833, InterruptConfig, InterruptMode
from appliance.thermal.backend import Hardware, open_hardware
from appliance.thermal.sampler import InterruptLevels, Plan, SamplingPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")
State = Literal["ok", "warming-up", "fault"]

POLLS_PER_FRAME = 2
FAST_RETRIES = 2
RETRY_GAP_S = 0.02
BACKOFF_INITIAL_S = 0.25
# A sensor that answers again is noticed within seconds; a retry every 5 s costs the bus nothing.
BACKOFF_MAX_S = 5.0
SIM_TICK_S = 0.05  # the fake needs a tick at least every 0.1 s
# How often the chip's settings are read back: a reset (brown-out) is found within this, for
# one or two one-byte reads.
SETTINGS_CHECK_S = 1.0


class ThermalSampler:
    """The I/O shell around SamplingPolicy: owns the driver, the INT pin, and what goes on the bus."""

    def __init__(
        self,
        bus: BusClient,
        hardware: Hardware,
        config: ThermalConfig,
        *,
        on_status: Callable[[str, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.hardware = hardware
        self.config = config
        self.on_status = on_status
        self.clock = clock
        self.policy = SamplingPolicy(
            idle_fps=config.idle_fps,
            active_fps=config.active_fps,
            idle_after_s=config.idle_after_s,
            presence_delta_c=config.presence_delta_c,
            fixture_after_s=config.fixture_after_s,
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thermal-i2c")
        self.driver: AMG8833 | None = None
        self.needs_reinit = False
        self.state: State | None = None
        self.reason = ""
        self.warm_from = clock()
        self.failures = 0
        self.backoff = BACKOFF_INITIAL_S
        self.next_poll = clock()
        self.next_settings_check = clock()
        self.last_pixels: list[float] | None = None
        self.frame_seq = 0
        self.interrupts_seen = 0
        self.present = False
        # Levels the chip holds now (None: interrupt off) and the last ones it held, for reporting an
        # edge that was already on its way when the interrupt was switched off.
        self.levels: InterruptLevels | None = None
        self.last_levels: InterruptLevels | None = None
        self.int_device: Any | None = None
        self.int_problem = ""
        self.edge = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._published: tuple[State, str, float] | None = None
        self._status_text: str | None = None

    # -- threads ---------------------------------------------------------------------------------------

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking sensor call on the I2C thread."""
        return await self._loop.run_in_executor(self.executor, functools.partial(fn, *args))

    def _on_edge(self) -> None:
        # gpiozero's callback thread: touch nothing of the loop's but this thread-safe hand-over.
        with contextlib.suppress(RuntimeError):  # the loop is already closed during shutdown
            self._loop.call_soon_threadsafe(self.edge.set)

    def attach_interrupt(self) -> None:
        """Listen on INT. A pin that cannot be had is reported, and presence then comes from frames."""
        pin = self.hardware.int_pin
        if pin is None:
            return
        from gpiozero import DigitalInputDevice

        try:
            device = DigitalInputDevice(pin, pull_up=True, pin_factory=self.hardware.pin_factory)
        except Exception as exc:  # gpiozero has many errors for this (no GPIO chip, pin in use, bad pin)
            self.int_problem = f"INT on GPIO{pin} unavailable ({exc}); presence from frames only"
            log.error("%s", self.int_problem)
            return
        device.when_activated = self._on_edge
        self.int_device = device

    def close(self) -> None:
        if self.int_device is not None:
            self.int_device.close()
        # Waits for a transfer in flight, so the bus is not closed under it.
        self.executor.shutdown(wait=True, cancel_futures=True)

    # -- the loop --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """One attempt to bring the sensor up, so that READY's status line says how it went."""
        try:
            await self._ensure_sensor()
        except SensorFault as exc:
            await self._set_fault(str(exc))

    async def run(self) -> None:
        while True:
            try:
                await self._ensure_sensor()
                await self._cycle()
            except SensorFault as exc:
                await self._failed(exc)

    async def run_sim_clock(self, tick: Callable[[], None]) -> None:
        while True:
            await self.io(tick)
            await asyncio.sleep(SIM_TICK_S)

    async def _ensure_sensor(self) -> None:
        if self.driver is None:
            driver = await self.io(self.hardware.connect)
            self.driver = driver
            self.levels = None  # a fresh power-up: interrupt off, 10 fps
            try:
                if self.config.moving_average:
                    await self.io(driver.set_moving_average, True)
                await self._apply(self.policy.plan(self.clock()))
            except SensorFault:
                # Half-configured: start from a fresh power-up next time, not from reinit(), which only
                # restores the settings that made it to the chip.
                self.driver = None
                raise
            self._powered_up()
            await self._publish_status()
        elif self.needs_reinit:
            # reinit() restores the rate, averaging and interrupt levels set through the driver.
            await self.io(self.driver.reinit)
            self._powered_up()

    def _powered_up(self) -> None:
        self.needs_reinit = False
        self.warm_from = self.clock()
        self.next_poll = self.clock()
        if self.state is None:
            self._refresh_state(self.clock())
        # After a fault the state stays "fault" until a good frame: a stuck sensor reinitialises fine.

    async def _failed(self, exc: SensorFault) -> None:
        self.failures += 1
        if self.state != "fault" and self.failures <= FAST_RETRIES and self.driver is not None:
            # One NACK on a noisy bus is not a broken sensor: read again before telling anyone.
            await asyncio.sleep(RETRY_GAP_S)
            return
        await self._set_fault(str(exc))
        await asyncio.sleep(self.backoff)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    async def _set_fault(self, reason: str) -> None:
        if self.state != "fault":
            log.warning("thermal sensor fault: %s", reason)
        self.state = "fault"
        self.reason = reason
        self.needs_reinit = True
        await self._publish_status()

    async def _cycle(self) -> None:
        """Wait for the next poll or an INT edge, and serve whichever came."""
        timeout = self.next_poll - self.clock()
        if timeout > 0 and not self.edge.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.edge.wait()
        if self.edge.is_set():
            self.edge.clear()
            await self._on_interrupt()
        now = self.clock()
        if now >= self.next_poll:
            period = 1.0 / (self._fps() * POLLS_PER_FRAME)
            # Deadline-based, so polls do not drift; after a stall, start afresh instead of bursting.
            self.next_poll = self.next_poll + period if self.next_poll + period > now else now + period
            await self._poll()

    def _fps(self) -> int:
        return self.driver.frame_rate if self.driver is not None else self.config.idle_fps

    async def _poll(self) -> None:
        assert self.driver is not None
        pixels = await self.io(self.driver.read_frame)
        t = self.clock()
        if pixels == self.last_pixels:
            # No new frame since the last read (two polls per frame period): nothing to publish.
            self._refresh_state(t)
            await self._apply(self.policy.plan(t))
            await self._publish_status()
            return
        if await self._settings_lost(t):
            return  # a frame from a chip at the wrong rate: not published; reinit comes next
        thermistor = await self.io(self.driver.read_thermistor)
        self.last_pixels = pixels
        self.failures = 0
        self.backoff = BACKOFF_INITIAL_S
        if self.state == "fault":
            log.info("thermal sensor recovered")
            self.state = None
            self.reason = ""
        self._refresh_state(t)
        plan = self.policy.on_frame(t, pixels)
        self.frame_seq += 1
        frame = ThermalFrame(
            pixels=list(pixels),
            thermistor=thermistor,
            rate_hz=float(self.driver.frame_rate),
            frame_seq=self.frame_seq,
        )
        await self.bus.publish("thermal.frame", frame, ts=t)
        await self._apply(plan)
        await self._publish_status()

    async def _settings_lost(self, t: float) -> bool:
        """Read the settings back now and then; a chip that lost them is a fault to reinit."""
        assert self.driver is not None
        if self.failures or t < self.next_settings_check:
            # After a failed transfer a setting may be half-written: the poll's _apply redoes
            # it, and the next check, after a good frame, judges the chip.
            return False
        self.next_settings_check = t + SETTINGS_CHECK_S
        lost = await self.io(self.driver.settings_lost)
        if not lost:
            return False
        # Straight to the fault and a reinit (run() does it next, without a backoff): reading
        # again would only find the same registers.
        await self._set_fault(f"the sensor lost its settings ({lost}): it reset")
        return True

    async def _on_interrupt(self) -> None:
        if self.driver is None or self.state == "fault":
            return  # the re-initialisation clears the flag and re-arms the pin
        try:
            t, mask = await self._take_interrupt()
        except SensorFault:
            # The chip holds INT low until the flag is cleared, and the pin reports edges only:
            # an interrupt not cleared now would never be followed by another edge. Serve it
            # again after the retry.
            self.edge.set()
            raise
        if mask is not None:
            await self._apply(self.policy.on_interrupt(t, mask))
            await self._publish_status()

    async def _take_interrupt(self) -> tuple[float, int | None]:
        """Read what the chip latched, clear it, publish it. Returns (time, image-order mask or None)."""
        assert self.driver is not None
        status = await self.io(self.driver.read_interrupt)
        await self.io(self.driver.clear_interrupt)
        t = self.clock()
        levels = self.levels or self.last_levels
        if not (status.flagged or status.mask) or levels is None:
            log.debug("INT edge with no interrupt flagged: ignored")
            return t, None
        self.interrupts_seen += 1
        # Image order, like ThermalFrame.pixels; the chip's table is in register order.
        mask = reg.grid_to_mask(status.pixels)
        log.info("presence interrupt: %d pixel(s) above %.2f °C", status.count, levels.upper_c)
        await self.bus.publish(
            "thermal.interrupt",
            ThermalInterrupt(mask=mask, mode="absolute", upper_c=levels.upper_c, lower_c=levels.lower_c),
            ts=t,
        )
        return t, mask

    async def _apply(self, plan: Plan) -> None:
        """Bring the chip in line with the plan, writing only what differs."""
        driver = self.driver
        assert driver is not None
        self.present = plan.present
        if plan.fps != driver.frame_rate:
            await self.io(driver.set_frame_rate, plan.fps)
            log.info("frame rate %d fps (%s)", plan.fps, "someone present" if plan.present else "idle")
            self.next_poll = self.clock()
        # Without a listener on INT an armed interrupt would only hold the line low; leave it off.
        wanted = plan.interrupt if self.int_device is not None else None
        if wanted != self.levels:
            if wanted is None:
                # A frame can show the arrival before the INT edge is served (or the edge is still on
                # its way); switching off clears the table, so report what it latched first.
                await self._take_interrupt()
                self.edge.clear()
                await self.io(driver.disable_interrupt)
            else:
                config = InterruptConfig(
                    wanted.upper_c, wanted.lower_c, wanted.hysteresis_c, InterruptMode.ABSOLUTE
                )
                await self.io(driver.configure_interrupt, config)
                self.last_levels = wanted
            self.levels = wanted

    # -- status ----------------------------------------------------------------------------------------

    def _refresh_state(self, now: float) -> None:
        if self.state == "fault":
            return  # only a good frame ends a fault
        self.state = "warming-up" if now - self.warm_from < self.config.warmup_s else "ok"

    def rate_hz(self) -> float:
        return float(self.driver.frame_rate) if self.driver is not None and self.state != "fault" else 0.0

    def status_text(self) -> str:
        if self.state == "fault":
            text = f"fault: {self.reason} (retrying)"
        else:
            text = f"{self.state}: {self.rate_hz():g} fps ({'someone present' if self.present else 'idle'})"
            fixtures = self.policy.fixture_count
            if fixtures:
                # Static warm things the policy masks (and why the interrupt is off): an installer
                # wondering why INT never fires, or why a warm corner is "not seen", finds it here.
                text += f"; {fixtures} fixture pixel(s) ignored, interrupt off"
        text += f"; {self.hardware.description}"
        return text + (f"; {self.int_problem}" if self.int_problem else "")

    async def _publish_status(self) -> None:
        state = self.state
        if state is None:
            return
        key = (state, self.reason, self.rate_hz())
        if key != self._published:
            self._published = key
            message = ThermalStatus(
                state=state, reason=self.reason[:4096], rate_hz=key[2], address=self.hardware.address
            )
            await self.bus.publish("thermal.status", message)
        # The text also says what thermal.status does not carry (fixtures learned or forgotten at an
        # unchanged rate), so it goes to health whenever it changes, not only with the message.
        text = self.status_text()
        if text != self._status_text and self.on_status is not None:
            self._status_text = text
            self.on_status(text, state == "fault" or bool(self.int_problem))


async def main(rt: Runtime) -> None:
    bus = await rt.connect_bus()
    hardware = open_hardware(rt.config)  # config mistakes stop here, with the key named
    rt.stack.callback(hardware.close)
    sampler = ThermalSampler(bus, hardware, rt.config.thermal)
    rt.stack.callback(sampler.close)  # before hardware.close: the I2C thread stops first
    sampler.attach_interrupt()
    if hardware.tick is not None:
        rt.spawn(sampler.run_sim_clock(hardware.tick), "sim-clock")
    await sampler.start()
    rt.spawn(sampler.run(), "sample")
    rt.ready(sampler.status_text())
    if sampler.state == "fault" or sampler.int_problem:
        rt.status(sampler.status_text(), degraded=True)
    # Wired only now: health before READY is "starting", whatever the sensor does.
    sampler.on_status = lambda text, bad: rt.status(text, degraded=bad)
