"""Hypothesis settings for the property tests: no per-example deadline (a slow machine must not fail a test:
nothing here measures speed), and the failing example printed so that it can be replayed."""

from hypothesis import settings

settings.register_profile("shipskip", deadline=None, print_blob=True)
settings.load_profile("shipskip")
