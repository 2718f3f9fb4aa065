from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core import Engine  # noqa: E402


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    """Experiment history goes to a temporary directory, never into the repository."""
    monkeypatch.setenv("BATCHLAB_DATA_DIR", str(tmp_path_factory.mktemp("data")))


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


# -- real-browser tests (pytest-playwright with Debian's chromium) ----------------------------
import os  # noqa: E402
import shutil  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Launch Debian's chromium (Playwright cannot download its own browser here)."""
    if not os.path.exists(CHROMIUM):
        message = ("chromium is not installed: run `make test` as root (it installs Debian's "
                   "chromium) or `sudo apt-get install chromium`")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI requires the browser tests: {message}")
        pytest.skip(message)
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--disable-background-networking", "--disable-component-update",
                     "--no-first-run", "--disable-sync", "--disable-gpu"]}
