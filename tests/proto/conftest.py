"""hypothesis profiles for the protocol tests: `fast` (default, CI) and `deep`.

Pick one with the HYPOTHESIS_PROFILE environment variable: `HYPOTHESIS_PROFILE=deep pytest`.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("fast", max_examples=200, deadline=None)
settings.register_profile("deep", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
