"""Simulated world: scenarios, the thermal scene they render, and the accuracy suite."""
