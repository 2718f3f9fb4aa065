"""The documented commands do what the README says (dry runs of make: nothing installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def dry_run(target: str) -> str:
    if shutil.which("make") is None:
        pytest.fail("make is not installed: the README's commands need it")
    out = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_notebooks_installs_jupyter_lab_and_opens_the_notebooks():
    steps = dry_run("notebooks")
    assert "pip install" in steps and "-r requirements-notebooks.txt" in steps
    assert "-m jupyter lab --notebook-dir=notebooks" in steps
    reqs = (ROOT / "requirements-notebooks.txt").read_text()
    assert "-r requirements.txt" in reqs and "jupyterlab" in reqs and "ipykernel" in reqs
    assert "make notebooks" in (ROOT / "README.md").read_text()


def test_make_run_and_make_test_are_the_two_commands():
    assert "streamlit run app.py" in dry_run("run")
    test = dry_run("test")
    assert "pytest" in test and "-r requirements-dev.txt" in test
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_run_answers_every_host_name_only_beyond_loopback():
    """On loopback the dashboard answers to this machine's names only (its config: a page
    whose name an attacker points at 127.0.0.1 gets no session); beyond loopback, where it
    asks for a password, to every name, or to those given in HOSTS."""
    assert "allowedHosts" not in dry_run("run")
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert 'allowedHosts = ["localhost", "127.0.0.1", "::1"]' in config
    out = subprocess.run(["make", "-n", "-B", "run", "ADDRESS=0.0.0.0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60).stdout
    assert "'--server.allowedHosts=*'" in out
    out = subprocess.run(["make", "-n", "-B", "run", "ADDRESS=0.0.0.0", "HOSTS=box.lan 10.0.0.5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "'--server.allowedHosts=box.lan' '--server.allowedHosts=10.0.0.5'" in out
