"""The linter and the type checker, configured in pyproject.toml, pass: the test command runs them.

ruff (fast) checks the package, tests and benchmarks; mypy (slow tier: ~1 min cold) checks
the package.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_ruff_is_clean():
    done = run("ruff", "check", "autoal_dist", "tests", "benchmarks")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_mypy_is_clean():
    done = run("mypy")  # files and settings: [tool.mypy] in pyproject.toml
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
