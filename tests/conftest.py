from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core import Engine  # noqa: E402


@pytest.fixture
def engine():
    """A fresh engine with the demo models, closed after the test."""
    eng = Engine()
    yield eng
    eng.close()


@pytest.fixture
def bare_engine():
    """A fresh engine without demo models."""
    eng = Engine(demo_models=False)
    yield eng
    eng.close()
