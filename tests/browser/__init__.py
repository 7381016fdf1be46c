"""Browser-test support: Playwright on Debian chromium (see fixtures.py)."""

import pytest

# Test modules import helpers from fixtures.py before pytest loads it as a plugin.
pytest.register_assert_rewrite("browser.fixtures")
