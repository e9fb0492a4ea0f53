"""The thermal sensor: AMG8833 register map, driver, register-level fake, recordings."""
