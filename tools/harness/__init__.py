"""Test harnesses: real servers the tests start and stop themselves, and the practice registries
(`registry.py`) tests and scripts run with."""
