"""From the appliance config (and the stored site calibration) to the core's ScreeningSettings.

The config exposes what a site changes (threshold, hysteresis, units, distance window,
warm-up); everything else keeps the core's fitted defaults. This is the one place the two meet,
so the daemon, `appliance replay` and `appliance calibrate` screen with the same settings.
"""

from __future__ import annotations

import dataclasses

from appliance.config import AppConfig
from appliance.screening import calstore
from appliance.screening.settings import ScreeningSettings


def settings_for(config: AppConfig, *, calibration_offset_c: float = 0.0) -> ScreeningSettings:
    s = config.screening
    return dataclasses.replace(
        ScreeningSettings(),
        threshold_c=s.threshold_c,
        hysteresis_c=s.hysteresis_c,
        unit=s.units,
        distance_min_m=s.distance_min_m,
        distance_max_m=s.distance_max_m,
        system_warmup_s=s.system_warmup_s,
        sensor_warmup_s=config.thermal.warmup_s,
        calibration_offset_c=calibration_offset_c,
    )


def settings_with_calibration(config: AppConfig) -> ScreeningSettings:
    """Settings with the offset stored in the config's state directory (0 if never calibrated)."""
    return settings_for(config, calibration_offset_c=calstore.offset(config.paths.state_dir))
