"""Test-wide settings: property tests draw the same examples on every run, so CI is repeatable."""

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, database=None)
settings.load_profile("repeatable")
