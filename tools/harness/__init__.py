"""Test harnesses: real servers the tests start and stop themselves."""
