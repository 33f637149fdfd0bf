"""Hypothesis profiles for the property-based tests in this folder.

- `ci` (the default): a bounded number of examples from a fixed seed, so the normal `pytest`
  run is deterministic and takes seconds.
- `long`: 100,000 examples per property (HYPOTHESIS_LONG_EXAMPLES to change it), random,
  for a search of its own: `HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/fuzz
  -p no:cacheprovider --hypothesis-show-statistics` (README, "What happens to bad input").
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Large and deeply nested inputs are the point here, and are slow to generate by design.
_SLOW_BY_DESIGN = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=_SLOW_BY_DESIGN,
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("HYPOTHESIS_LONG_EXAMPLES", "100000")),
    deadline=None,
    suppress_health_check=_SLOW_BY_DESIGN,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
