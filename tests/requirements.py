"""Tests that need something this machine may lack (Chromium, PostgreSQL): skipped where it is missing,
failed instead where CI says it must be there (``.ci/run`` sets ``WORKBENCH_REQUIRE_*=1``)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str, required_by: str) -> NoReturn:
    """Skip (the whole module, when called at import) because of ``reason``, unless ``$required_by`` is 1."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{required_by}=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
