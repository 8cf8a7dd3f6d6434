"""Shared test settings."""

import os

from hypothesis import HealthCheck, settings

# JIT compilation makes the first example of a property slow; deadlines would
# flag compile time, not a bug.
settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=25,
)
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=25,
    derandomize=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "default")
