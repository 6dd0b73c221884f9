"""Fixtures of the relay tests: the server tests' destinations (`listener`), re-exported.

`start_server` and `socks_server` come from tests/conftest.py.
"""

from __future__ import annotations

from server.conftest import listener  # noqa: F401  (a fixture, re-exported)
