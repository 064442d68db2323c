"""Drivers per step, each kind behind a small contract."""
